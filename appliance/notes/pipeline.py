"""Note processing: tagger and recognizers merged into PHI spans, redaction, clinical mentions.

The tagger (an OpenVINO model, reached through ``infer``) labels every token with a PHI class; the
recognizers (``recognizers.py``) find the fixed formats. A token is PHI when a recognizer span
covers it (the recognizer's type wins) or when the tagger gives the PHI classes together at least
``threshold`` probability (set below 0.5: a leak costs more than a redacted word). A name tagged
once is then tagged wherever the same capitalised word recurs in the note. PHI tokens of one
type separated only by spaces or light punctuation ("Smith, John", "(555) 123-4567") become one
span; each span is replaced by ``[TYPE]`` in the redacted text. Offsets refer to the original
note. Medications and diagnoses come from ConText, minus any that overlap PHI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from appliance.errors import ApplianceError
from appliance.notes.context import ConText
from appliance.notes.recognizers import recognize
from appliance.notes.tokens import Token, features, tokenize
from appliance.notes.types import CLASSES, Mention, PhiSpan, PhiType


class _Located(Protocol):
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...


Infer = Callable[[npt.NDArray[np.int64]], npt.NDArray[np.float32]]  # ids (n, F) -> probs (n, C)
CHUNK = 2048  # tokens per inference call: bounds the (tokens, features, embedding) intermediate
THRESHOLD = 0.3
# Tokens per note: a clinical note has a few thousand; this bounds a request's memory (tokens and
# their features take about 400 bytes each) whatever its characters are.
MAX_TOKENS = 250_000


class NoteTooLongError(ApplianceError):
    """The note has more tokens than one request may carry."""


_JOIN = frozenset(" ,.-/()'@:")
# Words that are never PHI by themselves: titles, credentials and letter formulas around a name.
# The tagger, which learns names from their neighbours, tends to take these in with the name.
NEVER_PHI = frozenset(
    "dr doctor mr mrs ms miss mx prof md do rn np pa pharmd phd lcsw lpn cna pt ot facs facp "
    "dds dpm od crna aprn mph msn bsn dear sincerely regards respectfully cc".split()
)
_MAX_GAP = 3


@dataclass(frozen=True)
class NotesResult:
    redacted: str
    phi: tuple[PhiSpan, ...]
    mentions: tuple[Mention, ...]

    def as_dict(self) -> dict[str, Any]:
        """The JSON result: redacted text, PHI spans (no text), clinical mentions."""
        return {
            "redacted_text": self.redacted,
            "phi": [s.as_dict() for s in self.phi],
            "clinical": [m.as_dict() for m in self.mentions],
        }


class NotesPipeline:
    """Runs one note through tokenizer, tagger, recognizers, merge and ConText."""

    def __init__(
        self, infer: Infer, context: ConText | None = None, threshold: float = THRESHOLD
    ) -> None:
        self._infer = infer
        self._context = context or ConText()
        self._threshold = threshold

    def tag(self, tokens: Sequence[Token]) -> list[PhiType | None]:
        """The tagger's PHI type (or None) for each token."""
        ids = features(tokens)
        labels: list[PhiType | None] = []
        for at in range(0, len(tokens), CHUNK):
            probs = np.asarray(self._infer(ids[at : at + CHUNK]), dtype=np.float64)
            probs = probs.reshape(-1, len(CLASSES))
            phi = ~(1.0 - probs[:, 0] < self._threshold)  # NaN fails closed: PHI
            best = probs[:, 1:].argmax(axis=1) + 1
            labels += [CLASSES[b] if p else None for p, b in zip(phi, best, strict=True)]
        return labels

    def phi_spans(self, text: str, tokens: Sequence[Token]) -> list[PhiSpan]:
        """The merged PHI spans of ``text``."""
        labels = self.tag(tokens)
        ruled = recognize(text)
        for i, t in enumerate(tokens):
            if labels[i] is not None and t.text.lower() in NEVER_PHI:
                labels[i] = None
        _cover(tokens, labels, ruled)
        _spread_names(tokens, labels)
        return _merge(text, tokens, labels, ruled)

    def process(self, text: str) -> NotesResult:
        """Redact and extract; raises NoteTooLongError past :data:`MAX_TOKENS` tokens."""
        tokens = tokenize(text)
        if len(tokens) > MAX_TOKENS:
            raise NoteTooLongError(
                f"the note has {len(tokens)} tokens (words, numbers, punctuation marks); "
                f"one request may carry {MAX_TOKENS}.",
                "Split the note into parts and send each part on its own.",
            )
        spans = self.phi_spans(text, tokens) if tokens else []
        found = self._context.mentions(text)
        hit = phi_token_mask(found, spans)  # a mention inside PHI is PHI, not a mention
        mentions = [m for m, phi in zip(found, hit, strict=True) if not phi]
        return NotesResult(redact(text, spans), tuple(spans), tuple(mentions))


def redact(text: str, spans: Sequence[PhiSpan]) -> str:
    """``text`` with every (sorted, disjoint) span replaced by ``[TYPE]``."""
    out, at = [], 0
    for s in spans:
        out += [text[at : s.start], f"[{s.type.value}]"]
        at = s.end
    out.append(text[at:])
    return "".join(out)


def phi_token_mask(tokens: Sequence[_Located], spans: Sequence[PhiSpan]) -> npt.NDArray[np.bool_]:
    """For each token (or anything with start and end), whether one of the sorted, disjoint
    ``spans`` overlaps it (how PHI is counted token by token)."""
    starts = np.array([s.start for s in spans], dtype=np.int64)
    ends = np.array([s.end for s in spans], dtype=np.int64)
    mask = np.zeros(len(tokens), dtype=bool)
    for i, t in enumerate(tokens):
        k = int(np.searchsorted(starts, t.end)) - 1  # the last span starting before the token ends
        mask[i] = k >= 0 and bool(ends[k] > t.start)
    return mask


def _covering(tokens: Sequence[Token], ruled: Sequence[PhiSpan]) -> list[PhiSpan | None]:
    """For each token, a recognizer span overlapping it (the latest-starting one), or None."""
    starts = np.array([s.start for s in ruled], dtype=np.int64)
    out: list[PhiSpan | None] = []
    for t in tokens:
        k = int(np.searchsorted(starts, t.end)) - 1
        hit = next((ruled[j] for j in (k, k - 1) if j >= 0 and ruled[j].end > t.start), None)
        out.append(hit)
    return out


def _cover(tokens: Sequence[Token], labels: list[PhiType | None], ruled: Sequence[PhiSpan]) -> None:
    for i, span in enumerate(_covering(tokens, ruled)):
        if span is not None:
            labels[i] = span.type


def _spread_names(tokens: Sequence[Token], labels: list[PhiType | None]) -> None:
    names = {t.text for t, label in zip(tokens, labels, strict=True)
             if label is PhiType.NAME and t.text[:1].isupper() and len(t.text) > 1}  # fmt: skip
    for i, t in enumerate(tokens):
        if labels[i] is None and t.text in names:
            labels[i] = PhiType.NAME


def _merge(
    text: str, tokens: Sequence[Token], labels: Sequence[PhiType | None], ruled: Sequence[PhiSpan]
) -> list[PhiSpan]:
    spans: list[PhiSpan] = []
    for t, label, rule in zip(tokens, labels, _covering(tokens, ruled), strict=True):
        if label is None:
            continue
        start, end = t.start, t.end
        if rule is not None and rule.type is label:  # a recognizer span is kept whole
            start, end = min(start, rule.start), max(end, rule.end)
        if spans:
            last = spans[-1]
            gap = text[last.end : start]
            joins = last.type is label and len(gap) <= _MAX_GAP and set(gap) <= _JOIN
            if joins or start < last.end:
                spans[-1] = PhiSpan(last.start, max(last.end, end), last.type)
                continue
        spans.append(PhiSpan(start, end, label))
    return spans
