"""Export for the clinic's SIEM: JSON lines and RFC 5424 syslog carrying DICOM audit messages,
from a real log anchored in a real swtpm."""

from __future__ import annotations

import io
import json
import os
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

from appliance.audit import (
    AuditEvent,
    AuditLog,
    AuditRecord,
    Outcome,
    TpmCheckpointAnchor,
    export_json,
    export_syslog,
    filter_range,
)
from appliance.audit.export import EVENT_CODES
from appliance.audit.records import parse_record
from appliance.trust.swtpm import Swtpm

STUDY_UID = "1.2.826.0.1.3680043.8.498.99887766554433221100"
PATIENT_NOTE = "note-for-Doe^Jane-MRN-004411"
# RFC 5424: <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD SP MSG
SYSLOG = re.compile(
    r"<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<host>[!-~]{1,255}) "
    r"(?P<app>[!-~]{1,48}) - IHE\+RFC-3881 - (?P<msg>.+)\n"
)


@pytest.fixture
def records(tmp_path: Path, swtpm: Swtpm) -> list[AuditRecord]:
    """One record of each kind a clinic sees, an hour apart from 08:00 on 2024-03-01."""
    now = [datetime(2024, 3, 1, 8, tzinfo=UTC)]
    log = AuditLog(
        tmp_path / "audit", os.urandom(32), TpmCheckpointAnchor(swtpm.tcti, 0x01500021),
        clock=lambda: now[0],
    )  # fmt: skip
    events = [
        (AuditEvent.LOGIN, Outcome.SUCCESS, {}),
        (AuditEvent.LOGIN_FAILED, Outcome.FAILURE, {}),
        (AuditEvent.PERMISSION_DENIED, Outcome.DENIED, {}),
        (AuditEvent.PHI_READ, Outcome.SUCCESS, {"subject": STUDY_UID}),
        (AuditEvent.INFERENCE, Outcome.SUCCESS, {"subject": PATIENT_NOTE, "model": "notes-1.4"}),
        (AuditEvent.UPDATE_INSTALLED, Outcome.SUCCESS, {"model": "cxr-2.2"}),
        (AuditEvent.EXPORT, Outcome.SUCCESS, {}),
        (AuditEvent.BREAK_GLASS, Outcome.SUCCESS, {"subject": STUDY_UID, "flagged": True}),
        (AuditEvent.LOGOUT, Outcome.SUCCESS, {}),
    ]
    for hour, (event, outcome, extra) in enumerate(events):
        now[0] = datetime(2024, 3, 1, 8 + hour, tzinfo=UTC)
        log.append(event, actor="dr.lee", outcome=outcome, role="radiologist", **extra)  # type: ignore[arg-type]
    log.checkpoint()
    return list(log.records())


def test_json_export_lines_parse_back_to_the_same_records(records: list[AuditRecord]) -> None:
    out = io.StringIO()
    assert export_json(records, out) == len(records)
    lines = out.getvalue().splitlines(keepends=True)
    assert [parse_record(line.encode()) for line in lines] == records
    assert all(json.loads(line)["hash"] for line in lines)


def _messages(records: list[AuditRecord]) -> list[tuple[re.Match[str], ET.Element]]:
    out = io.StringIO()
    assert export_syslog(records, out, hostname="appliance-7.clinic.example") == len(records)
    lines = out.getvalue().splitlines(keepends=True)
    assert len(lines) == len(records)
    parsed = []
    for line in lines:
        match = SYSLOG.fullmatch(line)
        assert match, line
        parsed.append((match, ET.fromstring(match["msg"])))  # noqa: S314 (our own output)
    return parsed


def test_syslog_lines_are_rfc5424_with_dicom_audit_messages(records: list[AuditRecord]) -> None:
    by_event = {
        r.event: (r, m, xml) for r, (m, xml) in zip(records, _messages(records), strict=True)
    }
    expected_ids = {
        AuditEvent.LOGIN: ("110114", "110122"),
        AuditEvent.LOGOUT: ("110114", "110123"),
        AuditEvent.LOGIN_FAILED: ("110114", "110122"),
        AuditEvent.PERMISSION_DENIED: ("110113", "110132"),
        AuditEvent.BREAK_GLASS: ("110113", "110127"),
        AuditEvent.PHI_READ: ("110110", None),
        AuditEvent.INFERENCE: ("110103", None),
        AuditEvent.UPDATE_INSTALLED: ("110100", "110131"),
        AuditEvent.EXPORT: ("110106", None),
        AuditEvent.CHECKPOINT: ("110100", None),
    }
    for event, (event_id, type_code) in expected_ids.items():
        record, match, xml = by_event[event]
        assert xml.tag == "AuditMessage"
        assert match["ts"] == record.time and match["host"] == "appliance-7.clinic.example"
        ident = xml.find("EventIdentification")
        assert ident is not None and ident.get("EventDateTime") == record.time
        code = ident.find("EventID")
        assert code is not None and code.get("csd-code") == event_id
        assert code.get("codeSystemName") == "DCM" and code.get("originalText")
        found = ident.find("EventTypeCode")
        assert (found.get("csd-code") if found is not None else None) == type_code
        user = xml.find("ActiveParticipant")
        assert user is not None and user.get("UserIsRequestor") == "true"
        source = xml.find("AuditSourceIdentification")
        assert source is not None and source.get("AuditSourceID") == "appliance-7.clinic.example"
    _, _, login = by_event[AuditEvent.LOGIN]
    assert login.find("ActiveParticipant/RoleIDCode").get("csd-code") == "radiologist"  # type: ignore[union-attr]


def test_syslog_severity_and_outcome_follow_the_record(records: list[AuditRecord]) -> None:
    for record, (match, xml) in zip(records, _messages(records), strict=True):
        pri = int(match["pri"])
        assert pri // 8 == 10  # authpriv
        warn = record.flagged or record.outcome is not Outcome.SUCCESS
        assert pri % 8 == (4 if warn else 5), record.event
        outcome = xml.find("EventIdentification").get("EventOutcomeIndicator")  # type: ignore[union-attr]
        assert outcome == {"success": "0", "failure": "4", "denied": "8"}[record.outcome]


def test_hashed_subject_travels_as_participant_object_and_raw_phi_never(
    records: list[AuditRecord],
) -> None:
    messages = _messages(records)
    for record, (_, xml) in zip(records, messages, strict=True):
        ids = [o.get("ParticipantObjectID") for o in xml.iter("ParticipantObjectIdentification")]
        assert (record.subject in ids) if record.subject else True
    json_out, syslog_out = io.StringIO(), io.StringIO()
    export_json(records, json_out)
    export_syslog(records, syslog_out, hostname="box")
    for text in (json_out.getvalue(), syslog_out.getvalue()):
        assert STUDY_UID not in text and PATIENT_NOTE not in text and "Doe" not in text


def test_export_of_a_date_range(records: list[AuditRecord]) -> None:
    since, until = datetime(2024, 3, 1, 10, tzinfo=UTC), datetime(2024, 3, 1, 13, tzinfo=UTC)
    chosen = list(filter_range(records, since, until))
    assert [r.event for r in chosen] == [
        AuditEvent.PERMISSION_DENIED, AuditEvent.PHI_READ, AuditEvent.INFERENCE,
    ]  # fmt: skip
    out = io.StringIO()
    assert export_syslog(chosen, out, hostname="box") == 3
    assert list(filter_range(records, None, None)) == records


def test_every_event_has_a_dicom_mapping() -> None:
    assert set(EVENT_CODES) == set(AuditEvent)


def test_markup_in_values_is_escaped_and_stays_on_one_line(records: list[AuditRecord]) -> None:
    import dataclasses

    hostile = dataclasses.replace(records[0], actor='x"/><Evil a="\n', role="r&<d>")
    [(match, xml)] = _messages([hostile])
    assert xml.find("Evil") is None
    assert xml.find("ActiveParticipant").get("UserID") == hostile.actor  # type: ignore[union-attr]
    assert "\n" not in match["msg"]


def test_invalid_syslog_hostname_is_refused(records: list[AuditRecord]) -> None:
    with pytest.raises(ValueError, match="HOSTNAME"):
        export_syslog(records, io.StringIO(), hostname="has space")
