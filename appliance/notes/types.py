"""The value types of note processing: PHI types, the tagger's classes, spans and mentions."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class PhiType(StrEnum):
    """Kinds of protected health information the box removes (after the HIPAA Safe Harbor list)."""

    NAME = "NAME"
    DATE = "DATE"
    LOCATION = "LOCATION"  # street address, city, ZIP code
    CONTACT = "CONTACT"  # phone, fax, e-mail, URL
    ID = "ID"  # medical record, social security, account, insurance numbers
    ORGANIZATION = "ORGANIZATION"  # hospitals, clinics, employers


# The tagger's output classes, in the order of its output columns; class 0 is "not PHI".
CLASSES: tuple[PhiType | None, ...] = (None, *PhiType)


class MentionKind(StrEnum):
    MEDICATION = "medication"
    DIAGNOSIS = "diagnosis"


@dataclass(frozen=True, order=True)
class PhiSpan:
    """PHI at ``note[start:end]``; the text itself is never kept in a result."""

    start: int
    end: int
    type: PhiType

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.type.value, "start": self.start, "end": self.end}


@dataclass(frozen=True, order=True)
class Mention:
    """A medication or diagnosis at ``note[start:end]`` with its ConText modifiers."""

    start: int
    end: int
    kind: MentionKind
    text: str  # the lexicon's name of the concept (never PHI)
    negated: bool = False
    historical: bool = False
    hypothetical: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.kind.value, "start": self.start, "end": self.end, "text": self.text,
            "negated": self.negated, "historical": self.historical,
            "hypothetical": self.hypothetical,
        }  # fmt: skip
