"""The audit log on disk: append-only files, a signed head, checkpoints anchored in the TPM.

The folder holds ``audit-000001.log``, ``audit-000002.log``, ... (one canonical JSON record per
line, see ``records.py``), ``head.json`` (the newest acknowledged record: seq, hash, file, the
file's size after it and the newest checkpoint's seq, HMAC-signed with the audit key) and
``.lock``. A new folder gets a signed genesis head before its first record, so a log file
without a head is always a deleted head, never a new log.

**One append**, under an exclusive ``flock`` on ``.lock`` (several processes append to one
folder): read and check head.json; repair the tail (below). The one shortcut: when head.json is
still the very file this process renamed into place (same inode, same change time, which no
write, rename or ``touch`` leaves alone) and the log file still has the size it names, with no
later file, nothing was written since, and the head this process signed is used without reading
it back (about 0.3 ms of each commit in the served API). Then, if
``checkpoint_every`` records followed the last checkpoint, or the file is ``max_file_bytes`` or
more, write a checkpoint first (at rotation it is the old file's last record, and the next record
opens the next file with ``prev`` = that checkpoint's hash); write the line with one ``os.write``
on an ``O_APPEND`` descriptor; ``fsync`` it while the new head, in a temporary file, is fsynced
too (``files.append_with_head``); rename that over head.json only once both are on disk, and
fsync the folder. Only then does ``append`` return: the record is acknowledged.

**A group commit** (``append_many``, driven by :class:`appliance.audit.group.GroupAuditor`) does
the same for many records at once: one lock, one ``os.write`` of all their lines, one ``fsync``,
one head. Each record carries a batch MAC binding its hash to the seq that opened its batch, so
that after a crash the records of the one batch that never got its head can be told from forged
or older ones (ADR 0009). A checkpoint due inside a batch closes the batch first: the TPM counter
is still advanced only after its checkpoint is durable and acknowledged.

**Checkpoints** carry ``anchor`` = the TPM counter + 1 and a MAC; the record is made durable and
the head moved *before* the counter is advanced, so a crash in between leaves the log one ahead
of the TPM (a warning, confirmed by the next checkpoint) and never behind it (which would read as
a rollback).

**Torn-line policy.** A crash (kill -9, power cut, disk full) can leave after the head either at
most one unacknowledged line (a complete record whose head update never happened, or a partial
line), or the records of the one group commit that was being written (each with a valid batch MAC
for the seq after the head), perhaps followed by a partial line. ``verify`` reports that as a
*warning*, not tampering. The next append removes a lone line without batch MAC and keeps (moves
the head over) the records of the batch, which only the key could have made, cutting any partial
line; logging a warning either way. Anything else after the head is not the trace of a crash:
``verify`` reports an error and ``append`` refuses to touch the log.

**What an attacker with root but without the audit key can do.** The key is sealed in the TPM
and only held in memory by the running appliance; the records hold no PHI (subjects are keyed
hashes that cannot be computed without the key). Detected, with the place: editing any byte of a
record; deleting, inserting, duplicating or reordering records; deleting, replacing or forging a
whole file, even rechained with correct SHA-256 hashes (the checkpoint MACs and the signed head
cannot be recomputed); truncating the log (the head names the newest record); deleting the
oldest files without the retention-prune record that names the deleted chain end; deleting or
forging head.json; restoring an older head.json without truncating (more than one record after
it; a head only one record old looks like a crash: a warning, and the next append drops that
record). *Not* detected: restoring a complete older copy of the folder, or truncating the log
together with restoring an older head.json that matches, when no checkpoint was made since that
copy -- the TPM counter only catches rollbacks across an anchored checkpoint, so call
``checkpoint()`` at shutdown and after sensitive events. Appending forged records after the head
is reported as an unacknowledged tail (a warning for one record) and removed by the next append,
never taken as genuine. Deleting everything is detected (the TPM counter is above zero once a
checkpoint was made) but not undone: export the log off the box regularly. Whoever holds the
key (root on the running appliance can read its memory) can forge records and checkpoints up to
the current TPM counter; only exported copies protect against that. Each log needs an anchor
(NV index) of its own: two logs advancing one counter would each read as rolled back.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from os import stat_result
from pathlib import Path
from typing import Protocol, Required, TypedDict, Unpack

from appliance.audit.files import (
    DISK_HINT,
    HEAD_NAME,
    TAMPER_HINT,
    append_with_head,
    flock,
    log_files,
    read_file,
    repair_tail,
    split_lines,
    try_parse,
)
from appliance.audit.records import (
    GENESIS,
    AuditEvent,
    AuditRecord,
    DetailValue,
    Head,
    Outcome,
    RawLine,
    RecordFormatError,
    Severity,
    file_name,
    file_number,
    format_time,
    hash_subject,
    make_record,
    parse_head,
    sign_head,
)
from appliance.audit.verify import Problem, verify_chain
from appliance.errors import StorageError
from appliance.fsutil import atomic_write, fsync_dir

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "appliance"


class CheckpointAnchor(Protocol):
    """A monotonic counter outside the disk (the TPM) that checkpoints are bound to."""

    def read(self) -> int: ...

    def advance(self) -> int: ...


@dataclass(frozen=True)
class VerifyReport:
    """The verdict of :func:`verify`: ``ok`` when no problem is an error (warnings allowed)."""

    ok: bool
    records: int
    checkpoints: int
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.WARNING]


class AuditFields(TypedDict, total=False):
    """The keyword arguments of an append (see :meth:`AuditLog.draft`)."""

    actor: Required[str]
    outcome: Required[Outcome]
    role: str | None
    subject: str | None
    model: str | None
    detail: Mapping[str, DetailValue] | None
    flagged: bool


@dataclass(frozen=True)
class AuditDraft:
    """An event to record, checked and with its subject already hashed (see AuditLog.draft)."""

    event: AuditEvent
    outcome: Outcome
    actor: str
    role: str | None = None
    subject: str | None = None
    model: str | None = None
    detail: Mapping[str, DetailValue] | None = None
    flagged: bool = False


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AuditLog:
    """The append-only audit log in ``directory``, signed with ``key``, anchored in ``anchor``.

    Raises StorageError when the folder cannot be created.
    """

    def __init__(
        self,
        directory: Path,
        key: bytes,
        anchor: CheckpointAnchor | None,
        *,
        checkpoint_every: int = 100,
        max_file_bytes: int = 8 << 20,
        retention_days: int = 6 * 365,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if checkpoint_every < 1 or max_file_bytes < 1 or retention_days < 1:
            raise ValueError("checkpoint_every, max_file_bytes and retention_days must be >= 1")
        self.directory = Path(directory)
        self._key = key
        self._anchor = anchor
        self._every = checkpoint_every
        self._max_bytes = max_file_bytes
        self._retention = timedelta(days=retention_days)
        self._clock = clock
        self._pool: ThreadPoolExecutor | None = None
        # The head this process last wrote, and head.json's identity just after (see _load).
        self._mine: tuple[tuple[int, ...], Head] | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StorageError(
                f"the audit log folder {self.directory} is not writable: {exc.strerror}.",
                "Check the state partition is mounted read-write.",
            ) from exc

    def append(self, event: AuditEvent, **fields: Unpack[AuditFields]) -> AuditRecord:
        """Record one event; the record is on stable storage when this returns.

        ``subject`` is the raw study or note identifier: only its keyed hash is stored. Raises
        StorageError when the record could not be made durable (the action must not go ahead),
        ValueError for a value that cannot be stored (or for CHECKPOINT: use :meth:`checkpoint`).
        """
        return self.append_many([self.draft(event, **fields)])[0]

    def draft(
        self,
        event: AuditEvent,
        *,
        actor: str,
        outcome: Outcome,
        role: str | None = None,
        subject: str | None = None,
        model: str | None = None,
        detail: Mapping[str, DetailValue] | None = None,
        flagged: bool = False,
    ) -> AuditDraft:
        """The event checked and its subject hashed, ready for :meth:`append_many`.

        Raises ValueError for a value that cannot be stored (or for CHECKPOINT).
        """
        if event is AuditEvent.CHECKPOINT:
            raise ValueError("checkpoints are written by AuditLog.checkpoint()")
        hashed = None if subject is None else hash_subject(self._key, subject)
        draft = AuditDraft(event, outcome, actor, role, hashed, model, detail, flagged)
        # Refuse a bad value before the lock, so that it cannot leave a checkpoint behind.
        make_record(seq=1, time=format_time(self._clock()), prev=GENESIS, **vars(draft))
        return draft

    def append_many(self, drafts: Sequence[AuditDraft]) -> list[AuditRecord]:
        """Record the events in order with one write and one fsync (a group commit).

        Every record is on stable storage, and named by the signed head, when this returns.
        Raises StorageError when they could not be made durable: then none is acknowledged.
        """
        if not drafts:
            return []
        with flock(self.directory, shared=False):
            return self._write_batch(self._load(), drafts)

    def checkpoint(self) -> AuditRecord:
        """Append a signed CHECKPOINT bound to the next TPM counter value, then advance it.

        Raises StorageError (disk) or TrustError (TPM) when it could not be completed.
        """
        with flock(self.directory, shared=False):
            record, _ = self._checkpoint(self._load())
        return record

    def records(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[AuditRecord]:
        """The acknowledged records, oldest first, with ``since <= time < until``.

        Reads without holding the lock (up to the head read at the start). Raises StorageError
        for a damaged record or head: run :func:`verify` to see what is wrong.
        """
        with flock(self.directory, shared=True):
            head = self._read_head(log_files(self.directory))
        for name in log_files(self.directory):
            if file_number(name) > file_number(head.file):
                break
            try:
                data = (self.directory / name).read_bytes()
            except FileNotFoundError:  # pruned meanwhile
                continue
            if name == head.file:
                data = data[: head.size]
            for number, raw in enumerate(split_lines(data), 1):
                record = self._parse(name, number, raw)
                if (since is None or record.when >= since) and (
                    until is None or record.when < until
                ):
                    yield record

    def prune(self, now: datetime | None = None) -> int:
        """Delete whole files whose newest record is older than the retention at ``now`` (by
        default the log's clock; housekeeping's retention clock); return how many.

        Each deleted file is first named by a RETENTION_PRUNE record carrying its last seq and
        hash (so :func:`verify` accepts the new start of the chain), followed by a checkpoint.
        Raises StorageError when the log cannot be written.
        """
        cutoff = (now or self._clock()) - self._retention
        with flock(self.directory, shared=False):
            head = self._load()
            expired = self._expired(head, cutoff)
            for name, last in expired:
                detail: dict[str, DetailValue] = {
                    "file": name,
                    "last_deleted_seq": last.seq,
                    "last_deleted_hash": last.hash,
                    "retention_days": self._retention.days,
                }
                draft = AuditDraft(AuditEvent.RETENTION_PRUNE, Outcome.SUCCESS, SYSTEM_ACTOR)
                _, head = self._write(head, replace(draft, detail=detail))
            if expired:
                self._checkpoint(head)
            for name, _ in expired:
                self._unlink(self.directory / name)
            if expired:
                fsync_dir(self.directory)
        if expired:
            log.info("audit: retention removed %d log files", len(expired))
        return len(expired)

    # -- internals: all run under the exclusive lock --------------------------------------------

    def _write(
        self, head: Head, draft: AuditDraft, anchor: int | None = None
    ) -> tuple[AuditRecord, Head]:
        """Write one record after ``head``; return it and the new head."""
        checkpoint = draft.event is AuditEvent.CHECKPOINT
        due = head.seq - head.checkpoint >= self._every
        full = head.size >= self._max_bytes and head.checkpoint != head.seq
        if not checkpoint and head.seq > 0 and (due or full):
            _, head = self._checkpoint(head)
        name = head.file
        if head.size >= self._max_bytes and not (checkpoint and head.checkpoint != head.seq):
            name = file_name(file_number(head.file) + 1)
        record = make_record(
            seq=head.seq + 1, time=format_time(self._clock()), prev=head.hash,
            anchor=anchor, key=self._key, batch_start=head.seq + 1, **vars(draft),
        )  # fmt: skip
        mark = record.seq if checkpoint else head.checkpoint
        sign = functools.partial(self._sign, record.seq, record.hash, name, mark)
        head = append_with_head(self.directory / name, record.to_line(), sign, self._fsyncer())
        return record, self._remember(head)

    def _write_batch(self, head: Head, drafts: Sequence[AuditDraft]) -> list[AuditRecord]:
        """Write ``drafts`` after ``head``: one write, fsync and head per run of records that
        shares a file and needs no checkpoint in between (a due checkpoint closes the run)."""
        out: list[AuditRecord] = []
        while len(out) < len(drafts):
            due = head.seq - head.checkpoint >= self._every
            full = head.size >= self._max_bytes and head.checkpoint != head.seq
            if head.seq > 0 and (due or full):
                _, head = self._checkpoint(head)
            name, size = head.file, head.size
            if head.size >= self._max_bytes:
                name, size = file_name(file_number(head.file) + 1), 0
            seq, prev, start = head.seq, head.hash, head.seq + 1
            lines: list[bytes] = []
            now = format_time(self._clock())
            for draft in drafts[len(out) :]:
                if lines and (seq - head.checkpoint >= self._every or size >= self._max_bytes):
                    break
                record = make_record(seq=seq + 1, time=now, prev=prev, key=self._key,
                                     batch_start=start, **vars(draft))  # fmt: skip
                line = record.to_line()
                lines.append(line)
                out.append(record)
                seq, prev, size = record.seq, record.hash, size + len(line)
            sign = functools.partial(self._sign, seq, prev, name, head.checkpoint)
            head = append_with_head(self.directory / name, b"".join(lines), sign, self._fsyncer())
            self._remember(head)
        return out

    def _sign(self, seq: int, hash: str, file: str, checkpoint: int, size: int) -> Head:
        return sign_head(self._key, seq=seq, hash=hash, file=file, size=size, checkpoint=checkpoint)

    def _fsyncer(self) -> ThreadPoolExecutor:
        """The thread that fsyncs a batch's log file while this one writes and syncs its head."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="audit-fsync")
        return self._pool

    def _checkpoint(self, head: Head) -> tuple[AuditRecord, Head]:
        target = None if self._anchor is None else self._anchor.read() + 1
        detail = {"previous": head.checkpoint}
        draft = AuditDraft(AuditEvent.CHECKPOINT, Outcome.SUCCESS, SYSTEM_ACTOR, detail=detail)
        record, head = self._write(head, draft, anchor=target)
        if self._anchor is not None:
            value = self._anchor.advance()
            if value != target:
                log.warning("audit: checkpoint anchor %s, TPM counter now %d", target, value)
        return record, head

    def _read_head(self, files: list[str]) -> Head:
        """The signed head; a new folder's genesis head when there is neither head nor file."""
        path = self.directory / HEAD_NAME
        if not path.exists():
            if files:
                raise StorageError(f"{path} is missing but the log has files.", TAMPER_HINT)
            return sign_head(
                self._key, seq=0, hash=GENESIS, file=file_name(1), size=0, checkpoint=0
            )
        raw = read_file(path)
        try:
            return parse_head(raw, self._key)
        except RecordFormatError as exc:
            raise StorageError(f"{path} is not valid: {exc}.", TAMPER_HINT) from exc

    def _remember(self, head: Head) -> Head:
        """Note ``head``, just renamed into place by this process, and head.json's identity."""
        try:
            self._mine = (_identity((self.directory / HEAD_NAME).stat()), head)
        except OSError:
            self._mine = None
        return head

    def _unchanged(self, files: list[str]) -> Head | None:
        """The head this process wrote last, if nothing was written to the log since: head.json
        is the same file (inode and change time), the log's last file is the head's and has the
        size it names. Any append, repair, rotation or edit by anyone fails one of these."""
        if self._mine is None or not files or files[-1] != self._mine[1].file:
            return None
        identity, head = self._mine
        try:
            same = _identity((self.directory / HEAD_NAME).stat()) == identity
            sized = same and (self.directory / head.file).stat().st_size == head.size
        except OSError:
            return None
        return head if sized else None

    def _load(self) -> Head:
        """The head, written if new, with any unacknowledged tail removed."""
        files = log_files(self.directory)
        if (mine := self._unchanged(files)) is not None:
            return mine
        self._mine = None
        head = self._read_head(files)
        if not (self.directory / HEAD_NAME).exists():
            atomic_write(self.directory / HEAD_NAME, head.to_bytes())
        return repair_tail(self.directory, self._key, head, files)

    def _expired(self, head: Head, cutoff: datetime) -> list[tuple[str, AuditRecord]]:
        """The oldest files, before the head's, whose newest record is older than ``cutoff``."""
        out: list[tuple[str, AuditRecord]] = []
        for name in log_files(self.directory):
            if file_number(name) >= file_number(head.file):
                break
            lines = split_lines(read_file(self.directory / name))
            last = self._parse(name, len(lines), lines[-1]) if lines else None
            if last is None or last.when >= cutoff:
                break
            out.append((name, last))
        return out

    def _parse(self, name: str, number: int, raw: bytes) -> AuditRecord:
        record = try_parse(raw)
        if record is None:
            raise StorageError(
                f"line {number} of {self.directory / name} is not a valid audit record.",
                "Run `appliance audit verify` to see what is wrong with the log.",
            )
        return record

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {path}: {exc.strerror}.", DISK_HINT) from exc


def _identity(st: stat_result) -> tuple[int, ...]:
    """What changes whenever a file is replaced or written: a rename brings another inode, a
    write or ``utime`` moves the change time (which no call can set back)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def verify(directory: Path, key: bytes, anchor: CheckpointAnchor | None) -> VerifyReport:
    """Check the whole log in ``directory`` against ``key`` and the TPM ``anchor``.

    Never raises for a damaged log (damage is a problem in the report); raises StorageError when
    the folder cannot be read and TrustError when the TPM cannot be.
    """
    directory = Path(directory)
    lines: list[RawLine] = []
    with flock(directory, shared=True):
        files = log_files(directory)
        try:
            head_path = directory / HEAD_NAME
            head = head_path.read_bytes() if head_path.exists() else None
            for name in files:
                data = (directory / name).read_bytes()
                lines += [(name, i, raw) for i, raw in enumerate(split_lines(data), 1)]
        except OSError as exc:
            raise StorageError(
                f"cannot read the audit log in {directory}: {exc.strerror}.",
                "Check that the folder exists and is readable.",
            ) from exc
        # Under the lock: a checkpoint cannot advance the counter between the reads.
        tpm = None if anchor is None else anchor.read()
    problems = verify_chain(lines, key, head=head, tpm_anchor=tpm, files=files)
    parsed = [r for r in (try_parse(raw) for _, _, raw in lines) if r is not None]
    return VerifyReport(
        ok=not any(p.severity is Severity.ERROR for p in problems),
        records=len(parsed),
        checkpoints=sum(r.event is AuditEvent.CHECKPOINT for r in parsed),
        problems=problems,
    )
