"""The tamper-evident audit trail: hash-chained records, HMAC-signed checkpoints anchored in a
TPM counter, verification that says where the log was changed, and export for the clinic's SIEM.

``records`` is the pure core (format, hashing), ``verify`` the pure verdict, ``log`` the files,
``anchor`` the TPM counter, ``export`` the JSON and syslog (DICOM audit message) writers.
"""

from appliance.audit.anchor import DEFAULT_AUDIT_ANCHOR_INDEX, TpmCheckpointAnchor
from appliance.audit.export import export_json, export_syslog, filter_range
from appliance.audit.log import AuditLog, CheckpointAnchor, VerifyReport, verify
from appliance.audit.records import (
    GENESIS,
    AuditEvent,
    AuditRecord,
    Outcome,
    Severity,
    checkpoint_mac,
    hash_subject,
    record_hash,
)
from appliance.audit.verify import Problem, verify_chain

__all__ = [
    "DEFAULT_AUDIT_ANCHOR_INDEX",
    "GENESIS",
    "AuditEvent",
    "AuditLog",
    "AuditRecord",
    "CheckpointAnchor",
    "Outcome",
    "Problem",
    "Severity",
    "TpmCheckpointAnchor",
    "VerifyReport",
    "checkpoint_mac",
    "export_json",
    "export_syslog",
    "filter_range",
    "hash_subject",
    "record_hash",
    "verify",
    "verify_chain",
]
