"""Verification of the audit chain: the pure decision, from raw lines, the head and the TPM counter.

It says whether the log is intact and, where it is not, which record or file is wrong and how.
No I/O: ``log.py`` reads the files and the TPM counter and hands them here.
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from appliance.audit.records import (
    GENESIS,
    AuditEvent,
    AuditRecord,
    RawLine,
    RecordFormatError,
    Severity,
    _without,
    batch_mac,
    checkpoint_mac,
    file_name,
    file_number,
    parse_head,
    parse_record,
    record_hash,
)


@dataclass(frozen=True)
class Problem:
    """One finding of the verifier: where (file, line, seq, each if known) and what."""

    file: str | None
    line: int | None
    seq: int | None
    what: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line) if p is not None)
        return f"{where + ': ' if where else ''}{self.severity}: {self.what}"


@dataclass(frozen=True)
class _Entry:
    file: str
    line: int
    rec: AuditRecord


def _span(first: int, last: int, verb: str, verbs: str) -> str:
    """'record 18 is' or 'records 18 to 20 are': the subject and the verb agree."""
    return f"record {first} {verb}" if first == last else f"records {first} to {last} {verbs}"


class _Verifier:
    """Collects problems; each check is one method so that each stays readable."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.problems: list[Problem] = []
        self.torn: RawLine | None = None

    def add(self, where: _Entry | RawLine | None, what: str, warn: bool = False) -> None:
        severity = Severity.WARNING if warn else Severity.ERROR
        if isinstance(where, _Entry):
            self.problems.append(Problem(where.file, where.line, where.rec.seq, what, severity))
        elif where is not None:
            self.problems.append(Problem(where[0], where[1], None, what, severity))
        else:
            self.problems.append(Problem(None, None, None, what, severity))

    def check_files(self, names: Sequence[str]) -> None:
        numbers = sorted(file_number(n) for n in names)
        for a, b in pairwise(numbers):
            for missing in range(a + 1, b):
                jump = f"the files jump from {file_name(a)} to {file_name(b)}"
                self.add(None, f"file {file_name(missing)} is missing ({jump})")

    def parse(self, lines: Sequence[RawLine]) -> list[_Entry]:
        entries: list[_Entry] = []
        for i, raw_line in enumerate(lines):
            file, line, raw = raw_line
            if not raw.endswith(b"\n"):
                if i == len(lines) - 1:
                    self.torn = raw_line
                else:
                    self.add(raw_line, f"line {line} of {file} is not a complete record")
                continue
            try:
                entry = _Entry(file, line, parse_record(raw))
            except RecordFormatError as exc:
                self.add(raw_line, f"line {line} of {file} is not a record ({exc})")
                continue
            self.check_record(entry, raw)
            entries.append(entry)
        return entries

    def check_record(self, e: _Entry, raw: bytes) -> None:
        rec = e.rec
        if rec.to_line() != raw:
            self.add(e, f"record {rec.seq} was modified (its bytes are not in canonical form)")
        elif record_hash(rec.prev, _without(rec, "hash", "mac")) != rec.hash:
            self.add(e, f"record {rec.seq} was modified (its hash does not match its content)")
        if rec.event is AuditEvent.CHECKPOINT:
            if rec.mac is None or not hmac.compare_digest(checkpoint_mac(self.key, rec), rec.mac):
                why = "log rewritten or signed with another key"
                self.add(e, f"checkpoint at record {rec.seq} has a bad signature ({why})")
        elif rec.anchor is not None:
            self.add(e, f"record {rec.seq} carries an anchor but is no checkpoint")

    def check_order(self, entries: list[_Entry]) -> None:
        count = Counter(e.rec.seq for e in entries)
        hashes = {e.rec.seq: e.rec.hash for e in entries}
        seen: set[int] = set()
        last: int | None = None
        for e in entries:
            seq = e.rec.seq
            if seq in seen:
                self.add(e, f"record {seq} appears twice (a copy was inserted or replayed)")
            elif last is not None and seq <= last:
                self.add(e, f"records out of order: seq {seq} follows {last}")
            elif last is not None and seq > last + 1:
                self.report_gap(e, last, [s for s in range(last + 1, seq) if s not in count])
            if count[seq - 1] == 1 and count[seq] == 1 and e.rec.prev != hashes[seq - 1]:
                why = "prev hash differs): inserted or replaced"
                self.add(e, f"record {seq} does not chain to record {seq - 1} ({why}")
            seen.add(seq)
            last = seq

    def report_gap(self, e: _Entry, last: int, missing: list[int]) -> None:
        """Seqs absent from the whole log are missing; ones found elsewhere are reordered."""
        seq = e.rec.seq
        if missing == list(range(last + 1, seq)):
            gone = _span(last + 1, seq - 1, "is", "are")
            self.add(e, f"{gone} missing (seq jumps from {last} to {seq})")
        elif missing:
            self.add(e, f"records {', '.join(map(str, missing))} are missing")

    def check_head(self, entries: list[_Entry], raw: bytes | None) -> int:
        """Report head problems; return how many entries the head acknowledges."""
        if raw is None:
            if entries:
                self.add(None, "head.json is missing: the newest records cannot be authenticated")
            return len(entries)
        try:
            head = parse_head(raw, self.key)
        except RecordFormatError as exc:
            self.add(None, f"head.json is not valid: {exc}")
            return len(entries)
        if head.seq == 0:
            return self.check_residue(entries, 0, 0)
        at = [i for i, e in enumerate(entries) if e.rec.seq == head.seq]
        last = entries[-1].rec.seq if entries else 0
        if not at:
            if last < head.seq:
                truncated = "records were truncated"
                said = f"the log ends at record {last} but the head says {head.seq}"
                self.add(None, f"{said}: {truncated}")
            else:
                self.add(None, f"record {head.seq}, the newest acknowledged one, is missing")
            return len(entries)
        e = entries[at[-1]]
        if e.rec.hash != head.hash:
            why = "hash differs): the newest records were rewritten"
            self.add(e, f"record {head.seq} is not the one the head signed ({why}")
        elif e.file != head.file:
            self.add(e, f"record {head.seq} is in {e.file} but the head says {head.file}")
        return self.check_residue(entries, at[-1] + 1, head.seq)

    def one_batch(self, beyond: list[_Entry], head_seq: int) -> bool:
        """Whether ``beyond`` is (a prefix of) the one group commit that opened after the head:
        only the audit key can make those MACs, and a batch that did not open at ``head_seq + 1``
        (for example one an older, restored head.json does not reach) does not match them."""
        return all(
            e.rec.mac is not None
            and e.rec.event is not AuditEvent.CHECKPOINT
            and hmac.compare_digest(batch_mac(self.key, e.rec.hash, head_seq + 1), e.rec.mac)
            for e in beyond
        )

    def check_residue(self, entries: list[_Entry], acknowledged: int, head_seq: int) -> int:
        """A crash leaves after the head at most one unacknowledged line, or the records of the
        one group commit that was writing (each carrying its batch MAC); more means tampering."""
        beyond = entries[acknowledged:]
        removed = "; the next append removes it"
        if beyond and self.one_batch(beyond, head_seq):
            span = _span(beyond[0].rec.seq, beyond[-1].rec.seq, "was", "were")
            crash = "written by one group commit but never acknowledged (a crash before its head)"
            self.add(beyond[0], f"{span} {crash}; the next append keeps them", warn=True)
            if self.torn:
                file, line, _ = self.torn
                what = f"line {line} of {file} is an incomplete record at the end of the log"
                self.add(self.torn, f"{what} (a write cut short by a crash){removed}", warn=True)
        elif beyond and (len(beyond) > 1 or self.torn):
            why = "an older head.json was restored or records were appended without the key"
            extra = _span(beyond[0].rec.seq, beyond[-1].rec.seq, "follows", "follow")
            self.add(beyond[0], f"{extra} the head: {why}")
        elif beyond:
            crash = "was written but never acknowledged (a crash during an append)"
            self.add(beyond[0], f"record {beyond[0].rec.seq} {crash}{removed}", warn=True)
        elif self.torn:
            file, line, _ = self.torn
            crash = "a write cut short by a crash, never acknowledged"
            what = f"line {line} of {file} is an incomplete record at the end of the log ({crash})"
            self.add(self.torn, what + removed, warn=True)
        return acknowledged

    def check_start(self, entries: list[_Entry], acknowledged: list[_Entry]) -> None:
        """The log starts at genesis, or where an acknowledged retention-prune record says."""
        if not entries:
            return
        first = entries[0]
        if first.rec.seq == 1:
            if first.rec.prev != GENESIS:
                self.add(first, "record 1 does not start from the genesis hash: it was replaced")
            return
        pruned = {
            (e.rec.detail.get("last_deleted_seq"), e.rec.detail.get("last_deleted_hash"))
            for e in acknowledged
            if e.rec.event is AuditEvent.RETENTION_PRUNE
        }
        if (first.rec.seq - 1, first.rec.prev) not in pruned:
            gone = _span(1, first.rec.seq - 1, "is missing", "are missing")
            why = "no retention-prune record accounts for them"
            self.add(first, f"the log starts at record {first.rec.seq}: {gone} and {why}")

    def check_anchor(self, acknowledged: list[_Entry], tpm: int | None) -> None:
        """Anchors never go down; the newest acknowledged one matches the TPM counter."""
        anchored = [
            (e, e.rec.anchor)
            for e in acknowledged
            if e.rec.event is AuditEvent.CHECKPOINT and e.rec.anchor is not None
        ]
        for (_, a), (e, b) in pairwise(anchored):
            if b < a:
                said = f"checkpoint at record {e.rec.seq} carries anchor {b} after anchor {a}"
                self.add(e, f"{said}: checkpoints were replayed")
        if tpm is None:
            return
        if not anchored:
            if tpm > 0:
                why = "the log was rolled back or replaced"
                self.add(
                    None, f"the log has no anchored checkpoint but the TPM counter is {tpm}: {why}"
                )
            return
        newest, value = anchored[-1]
        said = f"the newest checkpoint carries anchor {value} but the TPM counter is"
        if value < tpm:
            self.add(newest, f"{said} {tpm}: the log was rolled back")
        elif value == tpm + 1:
            crash = "a crash came before the TPM confirmed it; the next checkpoint does"
            self.add(newest, f"{said} {tpm} ({crash})", warn=True)
        elif value > tpm:
            self.add(newest, f"{said} only {tpm}: the log belongs to another TPM")


def verify_chain(
    lines: Sequence[RawLine],
    key: bytes,
    *,
    head: bytes | None,
    tpm_anchor: int | None = None,
    files: Sequence[str] = (),
) -> list[Problem]:
    """Every problem of the log made of ``lines`` (all files, oldest first).

    ``head`` is the content of head.json (None if absent), ``tpm_anchor`` the TPM counter (None
    when the log is not checked against a TPM), ``files`` the log file names present (to spot a
    missing one). ERROR problems mean tampering or damage; WARNING ones are the trace of a crash
    that lost nothing acknowledged. Never raises for bad input: bad input is a problem.
    """
    v = _Verifier(key)
    v.check_files(files)
    entries = v.parse(lines)
    v.check_order(entries)
    acknowledged = entries[: v.check_head(entries, head)]
    v.check_start(entries, acknowledged)
    v.check_anchor(acknowledged, tpm_anchor)
    return v.problems
