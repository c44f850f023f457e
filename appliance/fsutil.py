"""Atomic, durable file writes, and the lock files that keep processes apart.

Every file the box must not lose is written here: a temporary file in the same folder, fsync,
``os.replace`` over the target, then fsync of the folder so that the rename itself survives a
power cut (the pattern of python-tuf's ``_persist_metadata``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from appliance.errors import StorageError

_COPY_CHUNK = 1 << 20


@contextlib.contextmanager
def flocked(path: Path, *, shared: bool = False, wait: bool = True) -> Iterator[int | None]:
    """Hold an flock on ``path`` (created if missing) for the block, across processes; yield its
    file descriptor, or None when ``wait`` is False and another holder excludes this one.

    Each call opens its own descriptor, so two threads of one process exclude each other too.
    Raises StorageError when the file cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StorageError(
            f"cannot open the lock file {path}: {exc.strerror}.",
            f"Check that {path.parent} exists and is writable (the state partition mounted "
            "read-write).",
        ) from exc
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, mode if wait else mode | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        yield fd
    finally:
        os.close(fd)  # releases the lock


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (new names, renames) to stable storage."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int = 0o600) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` atomically when the block ends without error.

    On error the temporary file is removed and ``path`` keeps its old content.
    Raises StorageError when the folder cannot be written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}.", _where_hint(path)) from exc
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    try:
        with atomic_writer(path, mode) as fh:
            fh.write(data)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}.", _where_hint(path)) from exc


def move_durably(src: Path, dst: Path) -> None:
    """Move the finished file ``src`` over ``dst`` atomically and durably: its data flushed, then
    renamed (or, from another file system, copied through :func:`atomic_writer` and removed).

    Raises OSError; ``src`` is gone only when ``dst`` holds its bytes.
    """
    fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)  # the data reach the disk before the name that promises them
    finally:
        os.close(fd)
    try:
        src.replace(dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        with src.open("rb") as fin, atomic_writer(dst) as fout:
            shutil.copyfileobj(fin, fout, _COPY_CHUNK)
        src.unlink()
    else:
        fsync_dir(dst.parent)


def _where_hint(path: Path) -> str:
    # Callers write the box's state, but also export files and vendor keys: name the place.
    if path.is_dir():
        return f"{path} is a folder: name a file in it instead."
    return f"Make sure {path.parent} is a writable folder with free space."
