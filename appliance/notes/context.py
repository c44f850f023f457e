"""Clinical mentions and their context: a small ConText (Harkema et al., 2009) on a fixed lexicon.

Medications and diagnoses are found by the lexicon (``lexicon.py``). Each sentence is then searched
for trigger phrases: negation ("denies", "no history of", backwards "was ruled out"), history
("history of", "status post"), hypothesis ("return if", "watch for"). A forward trigger modifies
the mentions after it up to the end of its sentence or the first termination term ("but",
"however", "presents with"); a backward trigger modifies the mentions before it, back to the start
of the sentence or the last termination term. Pseudo-triggers ("no change", "not only") match
first and modify nothing, so "no" inside them does not negate. Where two triggers overlap, the one
that starts first and, at the same start, the longer one wins: "no history of" negates, it does
not mark history. Why not medspaCy: docs/adr/0007-notes-context-rules.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum

from appliance.notes.lexicon import DIAGNOSES, MEDICATIONS
from appliance.notes.types import Mention, MentionKind


class Modifier(Enum):
    NEGATED = "negated"
    HISTORICAL = "historical"
    HYPOTHETICAL = "hypothetical"
    PSEUDO = "pseudo"  # matches, modifies nothing
    TERMINATE = "terminate"


class Direction(Enum):
    FORWARD = "forward"
    BACKWARD = "backward"


_F, _B = Direction.FORWARD, Direction.BACKWARD
_N, _H, _Y = Modifier.NEGATED, Modifier.HISTORICAL, Modifier.HYPOTHETICAL
_P, _T = Modifier.PSEUDO, Modifier.TERMINATE

# (phrase, modifier, direction). Phrases are matched case-insensitively on word boundaries.
TRIGGERS: tuple[tuple[str, Modifier, Direction], ...] = (
    *(
        (p, _N, _F)
        for p in (
            "no",
            "not",
            "denies",
            "denied",
            "deny",
            "denying",
            "negative for",
            "without",
            "no evidence of",
            "no signs of",
            "no sign of",
            "no symptoms of",
            "no history of",
            "no prior history of",
            "no known",
            "no h/o",
            "free of",
            "absence of",
            "never had",
            "never",
            "not taking",
            "is not on",
            "not on",
            "no longer",
            "rules out",
            "ruled out for",
            "neither",
            "nor",
            "resolution of",
            "no complaints of",
            "fails to reveal",
        )
    ),
    *(
        (p, _N, _B)
        for p in (
            "was ruled out",
            "were ruled out",
            "is ruled out",
            "ruled out",
            "is negative",
            "was negative",
            "were negative",
            "not seen",
            "is absent",
            "was absent",
            "unlikely",
            "has resolved",
            "have resolved",
            "resolved",
        )
    ),
    *(
        (p, _H, _F)
        for p in (
            "history of",
            "h/o",
            "hx of",
            "past medical history of",
            "past medical history",
            "past history of",
            "pmh",
            "pmhx",
            "previously",
            "previous",
            "prior",
            "status post",
            "s/p",
            "remote history of",
            "known history of",
            "previously on",
            "formerly on",
            "was on",
            "stopped",
            "discontinued",
            "childhood",
        )
    ),
    *((p, _H, _B) for p in ("in the past", "years ago", "last year", "as a child")),
    *(
        (p, _Y, _F)
        for p in (
            "if",
            "return if",
            "call if",
            "should",
            "in case of",
            "watch for",
            "monitor for",
            "rule out",
            "r/o",
            "to rule out",
            "risk of",
            "in the event of",
            "consider",
            "may start",
            "will start",
            "plan to start",
            "could develop",
        )
    ),
    *(
        (p, _P, _F)
        for p in (
            "no increase",
            "no change",
            "not only",
            "no further",
            "not certain if",
            "not necessarily",
            "gram negative",
            "without difficulty",
            "no suspicious change",
            "not cause",
            "not drain",
        )
    ),
    *(
        (p, _T, _F)
        for p in (
            "but",
            "however",
            "although",
            "though",
            "except",
            "aside from",
            "apart from",
            "which",
            "presents with",
            "presenting with",
            "presented with",
            "reports",
            "complains of",
            "c/o",
            "now has",
            "currently",
            "today",
            "yet",
            "still",
            "admits to",
            "remains on",
            "continues on",
            "is on",
            "started on",
            "was started on",
            "secondary to",
            "due to",
        )
    ),
)

_SENTENCE = re.compile(r"[^.!?;\n]+(?:[.!?;]+|\n|$)")


def _alternation(phrases: Iterable[str]) -> re.Pattern[str]:
    """One regex of ``phrases``, longest first, each on word boundaries (never inside a word)."""
    ordered = sorted(set(phrases), key=lambda p: (-len(p), p))
    body = "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in ordered)
    return re.compile(rf"(?<![\w/-])(?:{body})(?![\w/-])", re.IGNORECASE)


@dataclass(frozen=True)
class _Trigger:
    start: int
    end: int
    modifier: Modifier
    direction: Direction


class ConText:
    """Finds lexicon mentions in a note and marks each negated, historical or hypothetical."""

    def __init__(
        self,
        triggers: Sequence[tuple[str, Modifier, Direction]] = TRIGGERS,
        medications: Mapping[str, Sequence[str]] = MEDICATIONS,
        diagnoses: Mapping[str, Sequence[str]] = DIAGNOSES,
    ) -> None:
        self._rules = {p.lower(): (m, d) for p, m, d in triggers}
        self._triggers = _alternation(self._rules)
        self._concepts: dict[str, tuple[MentionKind, str]] = {}
        for kind, table in ((MentionKind.MEDICATION, medications),
                            (MentionKind.DIAGNOSIS, diagnoses)):  # fmt: skip
            for name, forms in table.items():
                for form in forms:
                    self._concepts.setdefault(form.lower(), (kind, name))
        self._mentions = _alternation(self._concepts)

    def mentions(self, text: str) -> list[Mention]:
        """Every lexicon mention in ``text`` with its modifiers, in order of position."""
        out: list[Mention] = []
        for sentence in _SENTENCE.finditer(text):
            start, end = sentence.span()
            found = [self._mention(m) for m in self._mentions.finditer(text, start, end)]
            if found:
                triggers = self._find_triggers(text, start, end)
                out += [self._modify(m, triggers, start, end) for m in found]
        return out

    def _mention(self, m: re.Match[str]) -> Mention:
        kind, name = self._concepts[re.sub(r"\s+", " ", m.group().lower())]
        return Mention(m.start(), m.end(), kind, name)

    def _find_triggers(self, text: str, start: int, end: int) -> list[_Trigger]:
        out = []
        for m in self._triggers.finditer(text, start, end):
            modifier, direction = self._rules[re.sub(r"\s+", " ", m.group().lower())]
            out.append(_Trigger(m.start(), m.end(), modifier, direction))
        return out

    @staticmethod
    def _modify(mention: Mention, triggers: Sequence[_Trigger], start: int, end: int) -> Mention:
        flags: set[Modifier] = set()
        for t in triggers:
            if t.modifier in (_T, _P) or (t.start < mention.end and mention.start < t.end):
                continue
            if t.direction is _F and t.end <= mention.start:
                lo, hi = t.end, mention.start
            elif t.direction is _B and mention.end <= t.start:
                lo, hi = mention.end, t.start
            else:
                continue
            if not any(lo <= s.start < hi for s in triggers if s.modifier is _T):
                flags.add(t.modifier)
        return replace(
            mention,
            negated=_N in flags,
            historical=_H in flags,
            hypothetical=_Y in flags,
        )
