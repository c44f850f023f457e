"""The model card of notes-phi, written by build.py from the measured figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_PROSE = """\
# notes-phi 1.0.0: PHI redaction and clinical mentions for free-text notes

**A reference model for validating the appliance's note pipeline, trained and tested on synthetic
notes only. It is not validated on real clinical text; do not rely on it to de-identify real
records without a local evaluation.**

## Task
Input: one note (plain text). Output (`POST /v1/tasks/notes`): the redacted text (each PHI span
replaced by `[TYPE]`), the PHI spans (type, start, end; no text), and the medication and diagnosis
mentions (concept, start, end, negated, historical, hypothetical). Offsets are characters of the
original note.

## How it works
* **Tagger (this model, OpenVINO)**: each token (runs of letters, runs of digits, single other
  characters) becomes {features} hashed feature ids (CRC-32 into {buckets} buckets): the word in
  lower case (numbers only by their shape), its shape, prefixes and suffixes, the key of its
  `Key: value` line, words and shapes of three neighbours on each side and a few pairs. No
  vocabulary file: the box computes the same ids (`appliance/notes/tokens.py`). Graph:
  EmbeddingBagPackedSum ({embed} dims; Gather + ReduceSum in the ONNX file) -> ReLU -> 64 ReLU ->
  7-way softmax
  (`not PHI`, NAME, DATE, LOCATION, CONTACT, ID, ORGANIZATION). A token is PHI when the six PHI
  classes together reach probability 0.3.
* **Recognizers** (`appliance/notes/recognizers.py`): dates with a year or a month name, North
  American phone and fax numbers, SSNs, labelled record/account numbers and bare numbers of seven
  or more digits, e-mail, URLs, street addresses, state + ZIP, facility and company names with a
  suffix (Hospital, Medical Center, LLC...). Their spans win over the tagger's type.
* **Merge**: titles and credentials (Dr, MD, RN...) and letter formulas (Dear, Sincerely) are never
  PHI on their own; a name tagged once is tagged wherever the same capitalised word recurs; PHI
  tokens of one type separated by light punctuation become one span.
* **ConText** (`appliance/notes/context.py`, ADR 0007): lexicon mentions ({meds} medications, {dxs}
  diagnoses with their abbreviations) with NegEx/ConText triggers, forward and backward scope,
  termination terms and pseudo-triggers.

## Data and provenance
All text is synthetic: {train_tokens} training tokens from 3,000 notes of {train_families}
template families (`provisioning/notetemplates.py`), PHI values from Faker 40.63.0 (en_US names,
addresses, companies, e-mails; seeded) and seeded formats (ten date formats, six phone formats,
five record-number formats). No real patient data, nothing downloaded. Whole families are held
out: {held_out}. The tagger never saw their layouts or wording; their PHI values come from the
same generators as the training notes, so this measures new document layouts, not new kinds of
names. The recognizer word lists, the never-PHI list and the 0.3 threshold were written after
inspecting errors on four of the held-out families; the fifth, `instructions`, was added
afterwards and its errors were never looked at: its row is the check on that tuning.

## Held-out metrics ({notes} notes, round-robin over the held-out families)
PHI is counted per word or number token (punctuation excluded): a true PHI token is recalled
when any predicted span covers it, whatever its type; a predicted token is precise when it is
true PHI. Goal: recall >= 0.99 and precision >= 0.90.

| held-out family | tokens | PHI tokens | PHI recall | PHI precision |
|---|---:|---:|---:|---:|
{phi_rows}

Recall by PHI type, all held-out families together:

| PHI type | PHI tokens | recall |
|---|---:|---:|
{type_rows}

Clinical mentions ({mentions} true mentions): detection recall {mention_recall}, precision
{mention_precision}; all three modifiers right on {modifier_accuracy} of the mentions found;
negated mentions marked negated: {negation_recall}. These are high by construction: the
statements come from 26 frames whose triggers the rules know, and the concepts from the same
lexicon the box uses. They test the implementation, not clinical coverage.

## Validation gate (reference set)
`reference/cases.npz`: the tagger alone (no recognizers, argmax) on every token of 60 other
held-out notes; metric `f1` of "any PHI class" against the true token classes (validate.py scores
classes above 0 as positive for a multi-class output). Measured {reference_f1}; the manifest
expects {expected} with tolerance 0.02.

## Precision and parity
The IR is f32 (`compress_to_fp16=False`) and the box compiles it with
`INFERENCE_PRECISION_HINT=f32`. Maximum difference of the class probabilities from the training
code's numpy forward pass on the {parity_tokens} held-out tokens, and PHI decisions that change:

| runtime | max abs difference | PHI decisions changed |
|---|---|---:|
{parity_rows}

The model was trained in numpy (no torch module exists); `model.onnx` carries the same weights.

## Calibration
The probabilities are not calibrated: training weights PHI tokens three times over the rest, and
the decision threshold (0.3) trades precision for recall on purpose. Use the decision, not the
probability.

## Known failure modes
* Names that are also common words ("Will", "Hope"), single initials, and all-capital names in
  layouts unlike the training families are the most frequent misses.
* Capitalised words at the start of a line before a name ("Taken by ...", "Caller ...") and
  department words after a facility ("... Hospital Radiology") are the most frequent false hits.
* Only North American phone formats, US addresses and English text were generated.
* Runs on CPU and GPU; not on the NPU (the token axis is dynamic, the NPU compiles static
  shapes only; a fixed-size, padded variant would be needed).
* Ages are not removed (HIPAA counts ages over 89 as PHI: not handled).
* Mentions outside the lexicon are not found; misspellings are not found; ConText flags
  experiencer (family history) and uncertainty are not reported.
"""


def write_card(
    path: Path,
    metrics: dict[str, Any],
    parity: tuple[dict[str, tuple[str, int]], int],
    train_tokens: int,
    buckets: int,
) -> None:
    """Fill the card's prose with the figures and write it to ``path``."""
    from appliance.notes.lexicon import DIAGNOSES, MEDICATIONS
    from appliance.notes.tokens import FEATURES
    from provisioning.notesmodel import EMBED
    from provisioning.notetemplates import HELD_OUT, TRAIN

    rows = [_phi_row(name, c) for name, c in metrics["phi"].items()]
    rows.append(_phi_row("**all held-out**", metrics["phi_overall"]))
    results, tokens = parity
    clinical = metrics["clinical"]
    text = _PROSE.format(
        meds=len(MEDICATIONS), dxs=len(DIAGNOSES),
        features=FEATURES, buckets=f"{buckets:,}", embed=EMBED, train_tokens=f"{train_tokens:,}",
        train_families=len(TRAIN), held_out=", ".join(f"`{f}`" for f in HELD_OUT),
        notes=metrics["notes"], phi_rows="\n".join(rows),
        type_rows="\n".join(f"| {k} | {c['phi_tokens']} | {c['recall']:.4f} |"
                             for k, c in metrics["phi_recall_by_type"].items()),
        mentions=clinical["mentions"], mention_recall=clinical["mention_recall"],
        mention_precision=clinical["mention_precision"],
        modifier_accuracy=clinical["modifier_accuracy"],
        negation_recall=clinical["negation_recall"], reference_f1=metrics["reference_f1"],
        expected=f"{metrics['reference_expected']:.3f}", parity_tokens=f"{tokens:,}",
        parity_rows="\n".join(f"| {k} | {d} | {n} |" for k, (d, n) in results.items()),
    )  # fmt: skip
    path.write_text(text, encoding="utf-8")


def _phi_row(name: str, c: dict[str, Any]) -> str:
    return (f"| {name} | {c['tokens']} | {c['phi_tokens']} | {c['recall']:.4f} | "
            f"{c['precision']:.4f} |")  # fmt: skip
