"""Audit records and their verification: the pure core of the tamper-evident trail.

A record is one JSON object on one line: sorted keys, no spaces, UTF-8, every field present
(``null`` when empty), ending in ``\\n``. Its ``hash`` is SHA-256 over the previous record's hash
(32 bytes) and the canonical JSON of every field except ``hash`` and ``mac``; the first record's
``prev`` is 64 zeros. Checkpoint records also carry ``anchor`` (the TPM counter value) and a
``mac``: HMAC-SHA256 under the audit key over a context string and the record including its hash.
Other records carry a ``mac`` over their hash and the seq that opened their group commit (ADR
0009): it serves only to recognise, after a crash, the records of one batch that never got their
head; acknowledged records are protected by the chain, the head and the checkpoints as before.
The head (``head.json``) names the newest acknowledged record and is signed the same way.

Verification lives in :mod:`appliance.audit.verify`; file I/O in :mod:`appliance.audit.log`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

GENESIS = "0" * 64
CHECKPOINT_CONTEXT = b"appliance-audit-checkpoint-v1"
HEAD_CONTEXT = b"appliance-audit-head-v1"
RECORD_CONTEXT = b"appliance-audit-batch-v1"
FILE_PATTERN = re.compile(r"audit-(\d{6})\.log")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

DetailValue = str | int | bool
RawLine = tuple[str, int, bytes]
"""(file name, 1-based line number, the line's bytes including its ``\\n`` if it has one)."""


class AuditEvent(StrEnum):
    LOGIN = "login"
    LOGOUT = "logout"
    LOGIN_FAILED = "login-failed"
    LOCKOUT = "lockout"
    PERMISSION_DENIED = "permission-denied"
    BREAK_GLASS = "break-glass"
    BREAK_GLASS_ACK = "break-glass-ack"
    PHI_READ = "phi-read"
    INFERENCE = "inference"
    UPDATE_INSTALLED = "update-installed"
    UPDATE_REFUSED = "update-refused"
    CONFIG_CHANGE = "config-change"
    EXPORT = "export"
    ACCOUNT_CHANGE = "account-change"
    TOKEN_ISSUED = "token-issued"  # noqa: S105 (an event name, not a secret)
    TOKEN_REVOKED = "token-revoked"  # noqa: S105
    TRUST_CHANGE = "trust-change"
    CHECKPOINT = "checkpoint"
    RETENTION_PRUNE = "retention-prune"
    # Housekeeping (appliance/housekeeping.py): results and a study's images past their retention.
    RESULTS_PRUNE = "results-prune"
    STUDY_DELETED = "study-deleted"


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


class Severity(StrEnum):
    ERROR = "error"  # tampering or damage: the log cannot be trusted as is
    WARNING = "warning"  # the trace of a crash: nothing acknowledged is lost or changed


class RecordFormatError(ValueError):
    """A line or head file is not well formed; the message says which part."""


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The one byte form of a JSON object: sorted keys, no spaces, UTF-8."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def format_time(when: datetime) -> str:
    """ISO-8601 UTC with milliseconds and 'Z'. Raises ValueError for a naive datetime."""
    if when.tzinfo is None:
        raise ValueError("audit timestamps need a timezone-aware datetime")
    utc = when.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime:
    """The datetime of a record's ``time`` field."""
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)


@dataclass(frozen=True)
class AuditRecord:
    """One audit record as stored; build new ones with :func:`make_record`."""

    seq: int
    time: str
    event: AuditEvent
    outcome: Outcome
    actor: str
    role: str | None
    subject: str | None
    model: str | None
    detail: Mapping[str, DetailValue]
    flagged: bool
    prev: str
    hash: str
    mac: str | None = None
    anchor: int | None = None

    @property
    def when(self) -> datetime:
        return parse_time(self.time)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["event"], out["outcome"] = str(self.event), str(self.outcome)
        out["detail"] = dict(self.detail)
        return out

    def to_line(self) -> bytes:
        """The canonical stored form, ending in a newline."""
        return canonical(self.to_dict()) + b"\n"


def _without(record: AuditRecord, *names: str) -> dict[str, Any]:
    return {k: v for k, v in record.to_dict().items() if k not in names}


def record_hash(prev: str, body: Mapping[str, Any]) -> str:
    """SHA-256 over the previous hash's bytes and the canonical JSON of ``body``.

    ``body`` is every field of the record except ``hash`` and ``mac``.
    """
    return hashlib.sha256(bytes.fromhex(prev) + canonical(body)).hexdigest()


def checkpoint_mac(key: bytes, record: AuditRecord) -> str:
    """HMAC-SHA256 of a checkpoint record (including its hash and anchor) under the audit key."""
    data = CHECKPOINT_CONTEXT + canonical(_without(record, "mac"))
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def batch_mac(key: bytes, record_hash_hex: str, batch_start: int) -> str:
    """HMAC-SHA256 binding a record's hash to the first seq of the group commit that wrote it."""
    data = RECORD_CONTEXT + b"%d:" % batch_start + bytes.fromhex(record_hash_hex)
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def hash_subject(key: bytes, identifier: str) -> str:
    """The pseudonym stored for a study or note identifier (keyed, so not guessable offline)."""
    digest = hmac.new(key, b"subject:" + identifier.encode("utf-8"), hashlib.sha256)
    return digest.hexdigest()[:32]


def make_record(
    *,
    seq: int,
    time: str,
    event: AuditEvent,
    outcome: Outcome,
    actor: str,
    prev: str,
    role: str | None = None,
    subject: str | None = None,
    model: str | None = None,
    detail: Mapping[str, DetailValue] | None = None,
    flagged: bool = False,
    anchor: int | None = None,
    key: bytes | None = None,
    batch_start: int | None = None,
) -> AuditRecord:
    """A new record with its hash (and, for a checkpoint, its MAC under ``key``; for another
    record written with ``key`` by the batch that opened at ``batch_start``, its batch MAC).

    Raises ValueError for a value that could not be stored faithfully, or a checkpoint without key.
    """
    body: dict[str, Any] = {
        "seq": seq, "time": time, "event": AuditEvent(event), "outcome": Outcome(outcome),
        "actor": actor, "role": role, "subject": subject, "model": model, "flagged": flagged,
        "detail": dict(detail or {}), "prev": prev,
        "anchor": anchor if event is AuditEvent.CHECKPOINT else None,
    }  # fmt: skip
    problem = _field_problem(body, set(_CHECKS) - {"hash", "mac"})
    if problem:
        raise ValueError(f"cannot record this audit event: {problem}")
    try:
        digest = record_hash(prev, body)
    except UnicodeEncodeError as exc:
        raise ValueError("audit fields must be valid Unicode text") from exc
    body["detail"] = MappingProxyType(body["detail"])
    record = AuditRecord(**body, hash=digest)
    if event is AuditEvent.CHECKPOINT:
        if key is None:
            raise ValueError("a checkpoint needs the audit key")
        record = replace(record, mac=checkpoint_mac(key, record))
    elif key is not None and batch_start is not None:
        record = replace(record, mac=batch_mac(key, digest, batch_start))
    return record


def _is_hex(v: object) -> bool:
    return isinstance(v, str) and _HEX64.fullmatch(v) is not None


def _is_time(v: object) -> bool:
    if not isinstance(v, str) or _TIME.fullmatch(v) is None:
        return False
    try:
        parse_time(v)
    except ValueError:
        return False
    return True


def _opt_str(v: object) -> bool:
    return v is None or isinstance(v, str)


def _is_detail(v: object) -> bool:
    return isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(x, str | int) for k, x in v.items()
    )


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "seq": lambda v: type(v) is int and v >= 1,
    "time": _is_time,
    "event": lambda v: isinstance(v, str) and v in AuditEvent.__members__.values(),
    "outcome": lambda v: isinstance(v, str) and v in Outcome.__members__.values(),
    "actor": lambda v: isinstance(v, str) and v != "",
    "role": _opt_str,
    "subject": _opt_str,
    "model": _opt_str,
    "detail": _is_detail,
    "flagged": lambda v: type(v) is bool,
    "prev": _is_hex,
    "hash": _is_hex,
    "mac": lambda v: v is None or _is_hex(v),
    "anchor": lambda v: v is None or (type(v) is int and v >= 0),
}


def _field_problem(obj: Mapping[str, Any], names: set[str]) -> str | None:
    for name in sorted(names | set(obj)):
        if name not in obj:
            return f"field '{name}' is missing"
        if name not in names:
            return f"unexpected field '{name}'"
        if not _CHECKS[name](obj[name]):
            return f"field '{name}' has a wrong value"
    return None


def parse_record(raw: bytes) -> AuditRecord:
    """The record on one stored line. Raises RecordFormatError saying what is wrong."""
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordFormatError("not valid JSON") from exc
    if not isinstance(obj, dict):
        raise RecordFormatError("not a JSON object")
    problem = _field_problem(obj, set(_CHECKS))
    if problem:
        raise RecordFormatError(problem)
    obj["event"], obj["outcome"] = AuditEvent(obj["event"]), Outcome(obj["outcome"])
    obj["detail"] = MappingProxyType(obj["detail"])
    return AuditRecord(**obj)


@dataclass(frozen=True)
class Head:
    """The newest acknowledged record: its seq and hash, the file that holds it and that file's
    size just after it, and the seq of the newest checkpoint; ``mac`` signs the rest."""

    seq: int
    hash: str
    file: str
    size: int
    checkpoint: int
    mac: str

    def to_bytes(self) -> bytes:
        return canonical(asdict(self)) + b"\n"


def _head_mac(key: bytes, head: Mapping[str, Any]) -> str:
    body = {k: v for k, v in head.items() if k != "mac"}
    return hmac.new(key, HEAD_CONTEXT + canonical(body), hashlib.sha256).hexdigest()


def sign_head(key: bytes, *, seq: int, hash: str, file: str, size: int, checkpoint: int) -> Head:
    """A head signed with the audit key."""
    body = {"seq": seq, "hash": hash, "file": file, "size": size, "checkpoint": checkpoint}
    return Head(seq, hash, file, size, checkpoint, _head_mac(key, body))


def parse_head(raw: bytes, key: bytes) -> Head:
    """The head in ``raw`` if well formed and signed with ``key``.

    Raises RecordFormatError when it is malformed or its signature is wrong.
    """
    try:
        obj = json.loads(raw)
        head = Head(**obj)
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
        raise RecordFormatError("not a valid head") from exc
    ints = all(type(v) is int and v >= 0 for v in (head.seq, head.size, head.checkpoint))
    if not (ints and _is_hex(head.hash) and FILE_PATTERN.fullmatch(str(head.file))):
        raise RecordFormatError("not a valid head")
    if not isinstance(head.mac, str) or not hmac.compare_digest(_head_mac(key, obj), head.mac):
        raise RecordFormatError("bad signature (rewritten or signed with another key)")
    return head


def file_name(number: int) -> str:
    return f"audit-{number:06d}.log"


def file_number(name: str) -> int:
    match = FILE_PATTERN.fullmatch(name)
    if match is None:
        raise ValueError(f"not an audit log file name: {name}")
    return int(match.group(1))
