"""The audit log's files: reading, the locked append, and repairing what a crash leaves after
the head (one line, or the records of one group commit: see ``log.py`` and ADR 0009).

Shared by :mod:`appliance.audit.log`; nothing here holds state.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hmac
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from pathlib import Path

from appliance.audit.records import (
    FILE_PATTERN,
    AuditEvent,
    AuditRecord,
    Head,
    RecordFormatError,
    _without,
    batch_mac,
    file_name,
    file_number,
    parse_record,
    record_hash,
    sign_head,
)
from appliance.errors import StorageError
from appliance.fsutil import atomic_write, fsync_dir

log = logging.getLogger(__name__)

HEAD_NAME = "head.json"
LOCK_NAME = ".lock"
TAMPER_HINT = (
    "The audit log may have been tampered with: run `appliance audit verify`, keep the folder "
    "as it is and call the vendor's support."
)
DISK_HINT = "Check that the state partition is mounted read-write and not damaged."


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}.", DISK_HINT) from exc


def tail_after(path: Path, offset: int) -> tuple[int, bytes]:
    """The file's size and its bytes from ``offset`` on ((0, b"") for a missing file)."""
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(min(offset, size))
            return size, fh.read()
    except FileNotFoundError:
        return 0, b""
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}.", DISK_HINT) from exc


def log_files(directory: Path) -> list[str]:
    try:
        names = [n for n in os.listdir(directory) if FILE_PATTERN.fullmatch(n)]
    except FileNotFoundError:
        return []
    return sorted(names, key=file_number)


def split_lines(data: bytes) -> list[bytes]:
    """Lines with their ``\\n``; a last line without one is kept as is (a torn write)."""
    lines = [line + b"\n" for line in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


@contextlib.contextmanager
def flock(directory: Path, *, shared: bool) -> Iterator[None]:
    """Hold ``.lock``; a reader on a read-only copy of the folder goes without."""
    fd = None
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if not shared:
            raise StorageError(
                f"the audit log folder {directory} is not writable: {exc.strerror}.",
                "Check the state partition is mounted read-write.",
            ) from exc
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def append_with_head(
    path: Path, lines: bytes, head_for: Callable[[int], Head], fsyncer: Executor
) -> Head:
    """Append ``lines`` to the log file ``path`` and replace head.json beside it with
    ``head_for(new size)``, durably, in two rounds of syncs instead of three; return that head.

    The log file and the new head's temporary file are fsynced at once (one on ``fsyncer``'s
    thread); the head takes its name only after both are on disk, so a crash can never leave a
    head naming lines that are not. One folder fsync then covers the rename (and a new file).
    Raises StorageError when the records could not be made durable (then none is acknowledged).
    """
    directory, tmp = path.parent, None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            written = os.write(fd, lines)
            if written != len(lines):
                raise StorageError(
                    f"the audit log {path} took only {written} of {len(lines)} bytes (disk full?).",
                    "The action was not recorded and must not go ahead; free space on the state "
                    "partition.",
                )
            head = head_for(os.fstat(fd).st_size)
            synced = fsyncer.submit(os.fsync, fd)
            try:
                tmp = _write_tmp(directory / HEAD_NAME, head.to_bytes())
            finally:
                synced.result()
        finally:
            os.close(fd)
        tmp.replace(directory / HEAD_NAME)
        tmp = None
        fsync_dir(directory)
    except OSError as exc:
        raise StorageError(
            f"cannot write the audit log {path}: {exc.strerror}.",
            "The action was not recorded and must not go ahead; check that the state partition "
            "is writable and not full.",
        ) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
    return head


def _write_all(fd: int, data: bytes) -> None:
    """Write ``data`` whole: a short write (a full disk) raises ENOSPC rather than leave a head
    cut short to be renamed over head.json."""
    if os.write(fd, data) != len(data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _write_tmp(target: Path, data: bytes) -> Path:
    """``data`` in a fsynced temporary file beside ``target``, ready to be renamed over it."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        _write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            Path(name).unlink()
        raise
    os.close(fd)
    return Path(name)


def try_parse(raw: bytes) -> AuditRecord | None:
    try:
        return parse_record(raw) if raw.endswith(b"\n") else None
    except RecordFormatError:
        return None


def repair_tail(directory: Path, key: bytes, head: Head, files: list[str]) -> Head:
    """Deal with what a crash may leave after the head: keep the records of one group commit
    (moving the head over them), cut one line without batch MAC; refuse anything else."""
    path = directory / head.file
    # Only the bytes after the head matter here: reading the whole file on every append
    # made appends slower as the file grew toward rotation (2 ms more at 8 MiB).
    size, tail = tail_after(path, head.size)
    later = [directory / n for n in files if file_number(n) > file_number(head.file)]
    residue = tail + b"".join(read_file(p) for p in later)
    if size < head.size:
        raise StorageError(f"{path} is shorter than its signed head.", TAMPER_HINT)
    if not residue and not later:
        return head
    adopted = _adopt(
        directory, key, head, [(path, head.size, tail)] + [(p, 0, read_file(p)) for p in later]
    )
    if adopted is not None:
        return adopted
    rotated = [directory / file_name(file_number(head.file) + 1)]
    if later not in ([], rotated) or len(split_lines(residue)) > 1:
        raise StorageError(
            f"the audit log has more than one unacknowledged line after its head ({path}).",
            TAMPER_HINT,
        )
    try:
        if path.exists():
            with path.open("r+b") as fh:
                fh.truncate(head.size)
                os.fsync(fh.fileno())
        for p in later:
            p.unlink()
        fsync_dir(directory)
    except OSError as exc:
        raise StorageError(f"cannot repair the audit log: {exc.strerror}.", DISK_HINT) from exc
    log.warning("audit: removed %d unacknowledged bytes after the head", len(residue))
    return head


def _adopt(
    directory: Path, key: bytes, head: Head, pieces: list[tuple[Path, int, bytes]]
) -> Head | None:
    """The head moved over the records of the one batch a crash left after ``head``, or
    None when the residue is not that (no complete record, or one that is not of the batch).

    Each piece is (file, offset of its data, data after the head). A partial last line is
    cut; a file holding nothing but it is removed.
    """
    seq, prev, last = head.seq, head.hash, None
    torn: tuple[Path, int] | None = None
    for path, start, data in pieces:
        pos = start
        for raw in split_lines(data):
            if torn is not None:
                return None  # a partial line that is not the last one
            if not raw.endswith(b"\n"):
                torn = (path, pos)
                continue
            record = try_parse(raw)
            if record is None or not _of_batch(key, record, raw, seq, prev, head.seq + 1):
                return None
            pos += len(raw)
            seq, prev, last = record.seq, record.hash, (path, pos)
    if last is None:
        return None
    try:
        if torn is not None:
            if torn[0] == last[0]:
                with torn[0].open("r+b") as fh:
                    fh.truncate(torn[1])
                    os.fsync(fh.fileno())
            else:
                torn[0].unlink()
                fsync_dir(directory)
    except OSError as exc:
        raise StorageError(f"cannot repair the audit log: {exc.strerror}.", DISK_HINT) from exc
    new_head = sign_head(key, seq=seq, hash=prev, file=last[0].name, size=last[1],
                         checkpoint=head.checkpoint)  # fmt: skip
    atomic_write(directory / HEAD_NAME, new_head.to_bytes())
    log.warning("audit: kept records %d to %d of a group commit cut short by a crash",
                head.seq + 1, seq)  # fmt: skip
    return new_head


def _of_batch(key: bytes, record: AuditRecord, raw: bytes, seq: int, prev: str, start: int) -> bool:
    """Whether ``record`` (stored as ``raw``) is seq ``seq + 1`` after ``prev``, intact and
    written with the key by the group commit that opened at ``start``."""
    return (
        record.to_line() == raw and record.seq == seq + 1 and record.prev == prev
        and record.event is not AuditEvent.CHECKPOINT and record.anchor is None
        and record.mac is not None
        and record_hash(prev, _without(record, "hash", "mac")) == record.hash
        and hmac.compare_digest(batch_mac(key, record.hash, start), record.mac)
    )  # fmt: skip
