"""The notes task end to end: the notes-phi bundle installed through the real update agent (its
validation gate run on OpenVINO), served by real uvicorn over TLS; PHI redacted in the answer and
in the stored result, never in a log, an audit record or a file of the state folder."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.audit.records import AuditEvent, hash_subject
from appliance.identity.roles import Role
from appliance.logs import setup_logging

from .conftest import Served, serving

NOTES_MODEL = Path(__file__).resolve().parents[2] / "models" / "notes-phi"
PHI = {
    "name": "Wilhelmina Castellanos",
    "mrn": "40917733",
    "ssn": "555-01-2345",
    "phone": "(617) 555-0142",
    "date": "03/14/2026",
    "email": "w.castellanos@example.org",
}
NOTE = (
    f"Patient: {PHI['name']}    MRN: {PHI['mrn']}\n"
    f"Seen on {PHI['date']}. SSN {PHI['ssn']}. Call {PHI['phone']} or {PHI['email']}.\n"
    "Patient denies chest pain. No history of diabetes. Continue metformin 500 mg.\n"
)


@pytest.fixture
def notes_served(prepared: Served) -> Iterator[Served]:
    """The served box with notes-phi 1.0.0 installed next to the demo risk model."""
    prepared.install_folder(NOTES_MODEL, "notes-phi-1.0.0")
    yield from serving(prepared)


def test_the_notes_bundle_installs_through_the_gate(notes_served: Served) -> None:
    installed = [r for r in notes_served.rt.audit.records()
                 if r.event is AuditEvent.UPDATE_INSTALLED and r.model
                 and r.model.startswith("notes-phi")]  # fmt: skip
    assert installed, "no UPDATE_INSTALLED record for notes-phi"


def test_a_note_is_redacted_and_its_mentions_extracted(
    notes_served: Served, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    setup_logging("DEBUG", stderr=True)
    caplog.set_level(logging.DEBUG)
    with notes_served.client(Role.CLINICIAN) as http:
        answer = http.post("/v1/tasks/notes", json={"note_id": "enc-991", "text": NOTE})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        stored = http.get(f"/v1/results/{body['request_id']}")
    assert stored.status_code == 200 and stored.json()["outputs"] == body["result"]
    assert body["provenance"]["model_name"] == "notes-phi"
    result = body["result"]
    redacted = result["redacted_text"]
    for value in PHI.values():
        assert value not in redacted, f"{value!r} left in the redacted text"
    assert "denies chest pain" in redacted and "metformin 500 mg" in redacted
    covered = [NOTE[s["start"] : s["end"]] for s in result["phi"]]
    for value in PHI.values():
        assert any(value in c or c in value for c in covered), value
    assert all(set(s) == {"type", "start", "end"} for s in result["phi"])  # no PHI text
    clinical = {(c["text"], c["negated"], c["historical"]) for c in result["clinical"]}
    assert {("chest pain", True, False), ("diabetes mellitus", True, False),
            ("metformin", False, False)} <= clinical  # fmt: skip

    record = [r for r in notes_served.rt.audit.records() if r.event is AuditEvent.INFERENCE][-1]
    assert record.subject == hash_subject(notes_served.rt.audit_key, "enc-991")
    logged = caplog.text + capfd.readouterr().err
    files = [p for p in notes_served.config.state_dir.rglob("*") if p.is_file()]
    for value in (*PHI.values(), "denies chest pain"):  # no note text at all in the logs
        assert value not in logged, f"note text {value!r} in the logs"
    for value in PHI.values():  # the stored result holds the redacted text only
        for path in files:
            assert value.encode() not in path.read_bytes(), f"PHI {value!r} in {path}"


def test_bad_notes_requests_get_clear_4xx(notes_served: Served) -> None:
    with notes_served.client(Role.CLINICIAN) as http:
        empty = http.post("/v1/tasks/notes", json={"text": ""})
        extra = http.post("/v1/tasks/notes", json={"text": "x", "html": True})
        blank = http.post("/v1/tasks/notes", json={"text": " \n\t "})
        dots = http.post("/v1/tasks/notes", json={"text": "." * 300_000})
    assert empty.status_code == 400 and extra.status_code == 400
    assert dots.status_code == 400 and "Split the note" in dots.json()["hint"]
    assert blank.status_code == 200 and blank.json()["result"]["phi"] == []
