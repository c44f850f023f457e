"""Held-out metrics of the notes pipeline, as the model card reports them and a test re-measures.

PHI is counted word by word (``appliance.notes.pipeline.phi_token_mask`` on the tokens made of
letters or digits; punctuation between two names is not counted either way): a true PHI token is
recalled when any predicted span overlaps it, whatever type the span has (a redacted word is
redacted); a predicted token is precise when a true span overlaps it. Clinical mentions are
counted by exact span and concept; their modifiers (negated, historical, hypothetical) are
scored on the mentions that were found.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from appliance.notes.pipeline import NotesPipeline, phi_token_mask
from appliance.notes.tokens import tokenize
from appliance.notes.types import Mention, PhiType
from provisioning.notesdata import SynthNote


@dataclass
class Counts:
    """Token counts of one family (or all): true PHI, predicted PHI, both."""

    truth: int = 0
    predicted: int = 0
    hit: int = 0
    tokens: int = 0

    @property
    def recall(self) -> float:
        return self.hit / self.truth if self.truth else 1.0

    @property
    def precision(self) -> float:
        return self.hit / self.predicted if self.predicted else 1.0

    def add(self, other: Counts) -> None:
        self.truth += other.truth
        self.predicted += other.predicted
        self.hit += other.hit
        self.tokens += other.tokens


@dataclass
class Report:
    phi: dict[str, Counts] = field(default_factory=lambda: defaultdict(Counts))
    by_type: dict[str, Counts] = field(default_factory=lambda: defaultdict(Counts))
    mentions_true: int = 0
    mentions_found: int = 0
    mentions_matched: int = 0
    modifiers_right: int = 0
    negated_true: int = 0
    negated_right: int = 0

    def overall(self) -> Counts:
        total = Counts()
        for counts in self.phi.values():
            total.add(counts)
        return total

    @property
    def mention_recall(self) -> float:
        return self.mentions_matched / max(self.mentions_true, 1)

    @property
    def mention_precision(self) -> float:
        return self.mentions_matched / max(self.mentions_found, 1)

    @property
    def modifier_accuracy(self) -> float:
        return self.modifiers_right / max(self.mentions_matched, 1)

    @property
    def negation_recall(self) -> float:
        """Of the truly negated mentions found, the share marked negated."""
        return self.negated_right / max(self.negated_true, 1)


def evaluate(pipeline: NotesPipeline, notes: Iterable[SynthNote]) -> Report:
    """Run every note through ``pipeline`` and count against its truth."""
    report = Report()
    for note in notes:
        result = pipeline.process(note.text)
        tokens = [t for t in tokenize(note.text) if t.text.isalnum()]  # words and numbers
        truth = phi_token_mask(tokens, note.phi)
        predicted = phi_token_mask(tokens, result.phi)
        counts = report.phi[note.family]
        counts.add(Counts(int(truth.sum()), int(predicted.sum()), int((truth & predicted).sum()),
                          len(tokens)))  # fmt: skip
        for kind in PhiType:
            of_kind = phi_token_mask(tokens, [s for s in note.phi if s.type is kind])
            by_type = report.by_type[kind.value]
            by_type.truth += int(of_kind.sum())
            by_type.hit += int((of_kind & predicted).sum())
        _mentions(report, note, result.mentions)
    return report


def _mentions(report: Report, note: SynthNote, found: Iterable[Mention]) -> None:
    by_span = {(m.start, m.end, m.text): m for m in found}
    report.mentions_true += len(note.mentions)
    report.mentions_found += len(by_span)
    for m in note.mentions:
        got = by_span.get((m.start, m.end, m.text))
        if got is None:
            continue
        report.mentions_matched += 1
        same = (got.negated, got.historical, got.hypothetical) == (
            m.negated, m.historical, m.hypothetical)  # fmt: skip
        report.modifiers_right += same
        if m.negated:
            report.negated_true += 1
            report.negated_right += got.negated


def metrics_doc(report: Report, families: Sequence[str], notes: int, seed: int) -> dict[str, Any]:
    """The figures of ``report`` as ``metrics.json`` holds them (rounded to four places)."""
    per_family = {}
    for family in sorted(report.phi):
        c = report.phi[family]
        per_family[family] = {
            "tokens": c.tokens, "phi_tokens": c.truth,
            "recall": round(c.recall, 4), "precision": round(c.precision, 4),
        }  # fmt: skip
    total = report.overall()
    return {
        "held_out_families": list(families),
        "notes": notes,
        "seed": seed,
        "phi": per_family,
        "phi_overall": {
            "tokens": total.tokens,
            "phi_tokens": total.truth,
            "recall": round(total.recall, 4),
            "precision": round(total.precision, 4),
        },  # fmt: skip
        "phi_recall_by_type": {
            kind: {"phi_tokens": c.truth, "recall": round(c.recall, 4)}
            for kind, c in sorted(report.by_type.items())
        },
        "clinical": {
            "mentions": report.mentions_true,
            "mention_recall": round(report.mention_recall, 4),
            "mention_precision": round(report.mention_precision, 4),
            "modifier_accuracy": round(report.modifier_accuracy, 4),
            "negation_recall": round(report.negation_recall, 4),
        },
    }
