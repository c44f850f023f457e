"""Export audit records for the clinic's SIEM or auditor: JSON lines, or RFC 5424 syslog lines
that carry DICOM audit messages (DICOM PS3.15 A.5, IHE ATNA).

Syslog lines are ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME - IHE+RFC-3881 - MSG``: facility authpriv
(10), severity notice (5) for a success and warning (4) for a failure, a denial or a flagged
record; MSG is the ``<AuditMessage>`` XML on one line, without BOM (RFC 5424 MSG-ANY; every value
the XML carries is escaped by ElementTree, line ends included).

Event mapping (EventID / EventTypeCode, all codeSystemName "DCM"; action E execute, R read):

=================== ================================ =========================================
event               EventID, action                  EventTypeCode
=================== ================================ =========================================
login, login-failed 110114 User Authentication, E    110122 Login
logout              110114 User Authentication, E    110123 Logout
token-issued        110114 User Authentication, E    110122 Login
token-revoked       110114 User Authentication, E    110123 Logout
lockout             110113 Security Alert, E         110137 User Security Attributes Changed
account-change      110113 Security Alert, E         110137 User Security Attributes Changed
permission-denied   110113 Security Alert, E         110132 Use of Restricted Function
break-glass         110113 Security Alert, E         110127 Emergency Override Started
break-glass-ack     110113 Security Alert, E         110138 Emergency Override Stopped
config-change       110113 Security Alert, E         110131 Software Configuration
trust-change        110113 Security Alert, E         110129 Security Configuration
phi-read            110110 Patient Record, R         (none)
inference           110103 DICOM Instances Accessed, R (none): the engine reads a study or note
update-installed    110100 Application Activity, E   110131 Software Configuration
update-refused      110100 Application Activity, E   110131 Software Configuration
export              110106 Export, R                 (none)
checkpoint          110100 Application Activity, E   (none)
retention-prune     110100 Application Activity, D   (none)
results-prune       110100 Application Activity, D   (none)
study-deleted       110105 DICOM Study Deleted, D    (none)
=================== ================================ =========================================

EventOutcomeIndicator: 0 success, 4 failure (minor failure), 8 denied (serious failure). The
hashed subject goes into a ParticipantObjectIdentification (type 2, system object) and the model
version into another; free-form ``detail`` values are not exported in syslog (they stay in the
log and the JSON export).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TextIO

from appliance.audit.records import AuditEvent, AuditRecord, Outcome

FACILITY_AUTHPRIV = 10
SEVERITY_WARNING = 4
SEVERITY_NOTICE = 5
MSGID = "IHE+RFC-3881"
_SYSLOG_NAME = re.compile(r"[!-~]+")  # RFC 5424 PRINTUSASCII, no spaces
# Characters XML 1.0 cannot carry even escaped; ElementTree would write them raw.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_Code = tuple[str, str]
_AUTH: _Code = ("110114", "User Authentication")
_ALERT: _Code = ("110113", "Security Alert")
_ACTIVITY: _Code = ("110100", "Application Activity")
_LOGIN: _Code = ("110122", "Login")
_LOGOUT: _Code = ("110123", "Logout")
_USER_ATTRS: _Code = ("110137", "User Security Attributes Changed")
_SOFTWARE: _Code = ("110131", "Software Configuration")

EVENT_CODES: dict[AuditEvent, tuple[_Code, str, _Code | None]] = {
    AuditEvent.LOGIN: (_AUTH, "E", _LOGIN),
    AuditEvent.LOGIN_FAILED: (_AUTH, "E", _LOGIN),
    AuditEvent.LOGOUT: (_AUTH, "E", _LOGOUT),
    AuditEvent.TOKEN_ISSUED: (_AUTH, "E", _LOGIN),
    AuditEvent.TOKEN_REVOKED: (_AUTH, "E", _LOGOUT),
    AuditEvent.LOCKOUT: (_ALERT, "E", _USER_ATTRS),
    AuditEvent.ACCOUNT_CHANGE: (_ALERT, "E", _USER_ATTRS),
    AuditEvent.PERMISSION_DENIED: (_ALERT, "E", ("110132", "Use of Restricted Function")),
    AuditEvent.BREAK_GLASS: (_ALERT, "E", ("110127", "Emergency Override Started")),
    AuditEvent.BREAK_GLASS_ACK: (_ALERT, "E", ("110138", "Emergency Override Stopped")),
    AuditEvent.CONFIG_CHANGE: (_ALERT, "E", _SOFTWARE),
    AuditEvent.TRUST_CHANGE: (_ALERT, "E", ("110129", "Security Configuration")),
    AuditEvent.PHI_READ: (("110110", "Patient Record"), "R", None),
    AuditEvent.INFERENCE: (("110103", "DICOM Instances Accessed"), "R", None),
    AuditEvent.UPDATE_INSTALLED: (_ACTIVITY, "E", _SOFTWARE),
    AuditEvent.UPDATE_REFUSED: (_ACTIVITY, "E", _SOFTWARE),
    AuditEvent.EXPORT: (("110106", "Export"), "R", None),
    AuditEvent.CHECKPOINT: (_ACTIVITY, "E", None),
    AuditEvent.RETENTION_PRUNE: (_ACTIVITY, "D", None),
    AuditEvent.RESULTS_PRUNE: (_ACTIVITY, "D", None),
    AuditEvent.STUDY_DELETED: (("110105", "DICOM Study Deleted"), "D", None),
}
OUTCOME_INDICATOR = {Outcome.SUCCESS: "0", Outcome.FAILURE: "4", Outcome.DENIED: "8"}


def filter_range(
    records: Iterable[AuditRecord], since: datetime | None, until: datetime | None
) -> Iterator[AuditRecord]:
    """The records with ``since <= time < until`` (either bound may be None)."""
    for record in records:
        when = record.when
        if (since is None or when >= since) and (until is None or when < until):
            yield record


def export_json(records: Iterable[AuditRecord], out: TextIO) -> int:
    """Write each record as its canonical JSON line; return how many were written."""
    count = 0
    for record in records:
        out.write(record.to_line().decode("utf-8"))
        count += 1
    return count


def _xml(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _coded(parent: ET.Element, tag: str, code: _Code, system: str = "DCM") -> None:
    ET.SubElement(
        parent,
        tag,
        {"csd-code": _xml(code[0]), "codeSystemName": system, "originalText": _xml(code[1])},
    )


def _participant_object(root: ET.Element, object_id: str, code: _Code) -> None:
    obj = ET.SubElement(
        root,
        "ParticipantObjectIdentification",
        {"ParticipantObjectID": _xml(object_id), "ParticipantObjectTypeCode": "2"},
    )
    _coded(obj, "ParticipantObjectIDTypeCode", code, system="appliance")


def audit_message(record: AuditRecord, hostname: str) -> str:
    """The DICOM audit message (IHE ATNA) of ``record`` as one line of XML."""
    event_id, action, event_type = EVENT_CODES[record.event]
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(
        root,
        "EventIdentification",
        {
            "EventActionCode": action,
            "EventDateTime": record.time,
            "EventOutcomeIndicator": OUTCOME_INDICATOR[record.outcome],
        },
    )
    _coded(ident, "EventID", event_id)
    if event_type is not None:
        _coded(ident, "EventTypeCode", event_type)
    user = ET.SubElement(
        root, "ActiveParticipant", {"UserID": _xml(record.actor), "UserIsRequestor": "true"}
    )
    if record.role is not None:
        _coded(user, "RoleIDCode", (record.role, record.role), system="appliance")
    source = ET.SubElement(root, "AuditSourceIdentification", {"AuditSourceID": hostname})
    _coded(source, "AuditSourceTypeCode", ("4", "Application Server"))
    if record.subject is not None:
        _participant_object(root, record.subject, ("subject-hmac", "Hashed study or note ID"))
    if record.model is not None:
        _participant_object(root, record.model, ("model-version", "Model version"))
    return ET.tostring(root, encoding="unicode")


def syslog_line(record: AuditRecord, *, hostname: str, app: str = "appliance") -> str:
    """One RFC 5424 line (with its newline) for ``record``.

    Raises ValueError when ``hostname`` or ``app`` is not a valid RFC 5424 name.
    """
    if not _SYSLOG_NAME.fullmatch(hostname) or len(hostname) > 255:  # noqa: PLR2004
        raise ValueError(f"not a syslog HOSTNAME: {hostname!r}")
    if not _SYSLOG_NAME.fullmatch(app) or len(app) > 48:  # noqa: PLR2004
        raise ValueError(f"not a syslog APP-NAME: {app!r}")
    warn = record.flagged or record.outcome is not Outcome.SUCCESS
    pri = FACILITY_AUTHPRIV * 8 + (SEVERITY_WARNING if warn else SEVERITY_NOTICE)
    msg = audit_message(record, hostname)
    return f"<{pri}>1 {record.time} {hostname} {app} - {MSGID} - {msg}\n"


def export_syslog(
    records: Iterable[AuditRecord], out: TextIO, *, hostname: str, app: str = "appliance"
) -> int:
    """Write each record as an RFC 5424 line carrying its DICOM audit message; return the count.

    Raises ValueError when ``hostname`` or ``app`` is not a valid RFC 5424 name.
    """
    count = 0
    for record in records:
        out.write(syslog_line(record, hostname=hostname, app=app))
        count += 1
    return count
