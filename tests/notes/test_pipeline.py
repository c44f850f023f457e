"""The note pipeline on the committed notes-phi IR (real OpenVINO, CPU, f32): tokens, merge,
redaction, offsets, chunking of long notes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.notes.pipeline import CHUNK, NotesPipeline, redact
from appliance.notes.tokens import FEATURES, features, tokenize
from appliance.notes.types import PhiSpan, PhiType

MODEL = Path(__file__).resolve().parents[2] / "models" / "notes-phi" / "model.xml"


@pytest.fixture(scope="module")
def pipeline() -> NotesPipeline:
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(MODEL), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    return NotesPipeline(lambda ids: compiled(ids)[0])


def test_tokens_carry_offsets_and_line_keys() -> None:
    text = "Name: Ann Lee\nMRN: 123\n  seen"
    tokens = tokenize(text)
    assert all(text[t.start : t.end] == t.text for t in tokens)
    assert [(t.text, t.line_key, t.after_colon) for t in tokens] == [
        ("Name", "", False), (":", "", False), ("Ann", "name", True), ("Lee", "name", True),
        ("MRN", "", False), (":", "", False), ("123", "mrn", True), ("seen", "", False),
    ]  # fmt: skip
    assert features(tokens).shape == (len(tokens), FEATURES)


def test_redact_replaces_spans_by_type() -> None:
    text = "Seen by Ann Lee on 1/2/2020."
    spans = [PhiSpan(8, 15, PhiType.NAME), PhiSpan(19, 27, PhiType.DATE)]
    assert redact(text, spans) == "Seen by [NAME] on [DATE]."


def test_a_note_is_redacted_with_whole_spans(pipeline: NotesPipeline) -> None:
    text = (
        "Patient: Margaret Okonkwo  MRN: 88412093\n"
        "Daughter can be reached at (617) 555-0199.\n"
        "Seen by Dr. Harold Brenner on March 3, 2024. Margaret denies chest pain.\n"
    )
    result = pipeline.process(text)
    found = {(text[s.start : s.end], s.type) for s in result.phi}
    assert {("Margaret Okonkwo", PhiType.NAME), ("88412093", PhiType.ID),
            ("(617) 555-0199", PhiType.CONTACT), ("Harold Brenner", PhiType.NAME),
            ("March 3, 2024", PhiType.DATE), ("Margaret", PhiType.NAME)} <= found  # fmt: skip
    assert "Dr. [NAME]" in result.redacted  # the title stays, the name goes
    (mention,) = result.mentions
    assert (mention.text, mention.negated) == ("chest pain", True)


def test_a_long_note_is_tagged_in_chunks_like_a_short_one(pipeline: NotesPipeline) -> None:
    line = "Seen by Ann Lee on 01/02/2020, BP 120/80, continue lisinopril 10 mg.\n"
    one = pipeline.process(line)
    many = pipeline.process(line * 200)
    assert len(tokenize(line * 200)) > CHUNK
    assert len(many.phi) == 200 * len(one.phi)
    assert many.redacted == one.redacted * 200


def test_empty_and_blank_notes(pipeline: NotesPipeline) -> None:
    assert pipeline.process(" \n ").as_dict() == {
        "redacted_text": " \n ",
        "phi": [],
        "clinical": [],
    }


def test_a_tagger_answering_nan_redacts_everything() -> None:
    """Fail closed: a broken model (NaN) must not let text through as "not PHI"."""
    broken = NotesPipeline(lambda ids: np.full((len(ids), 7), np.nan, dtype=np.float32))
    assert broken.process("Seen today").redacted.count("[") == 1  # one span, both words


_PIECES = st.sampled_from(
    ["Dr. ", "Ann Lee", " ", "\n", "MRN: 12345678", "03/14/2021", ", ", "denies chest pain",
     "(555) 123-4567", "a@b.co", "42 Elm Street", ".", ":", "-", "Hospital", "no ", "é", "\t"]
)  # fmt: skip


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.one_of(st.text(max_size=300), st.lists(_PIECES, max_size=40).map("".join)))
def test_any_text_gives_sorted_disjoint_spans_inside_the_note(
    pipeline: NotesPipeline, text: str
) -> None:
    result = pipeline.process(text)
    at = 0
    for span in result.phi:
        assert at <= span.start < span.end <= len(text)
        at = span.end
    assert redact(text, result.phi) == result.redacted
    for m in result.mentions:
        assert 0 <= m.start < m.end <= len(text)
        assert not any(s.start < m.end and m.start < s.end for s in result.phi)


def test_accented_names_are_whole_tokens(pipeline: NotesPipeline) -> None:
    assert [t.text for t in tokenize("José Müller-Ñúñez")] == ["José", "Müller", "-", "Ñúñez"]
    text = "Patient: José Müller  MRN: 88412093"
    redacted = pipeline.process(text).redacted
    assert "Jos" not in redacted and "ller" not in redacted, redacted
