"""The study spool and queue: received instances on disk, their index and study states in SQLite.

Layout under ``<state>/dicom``::

    spool/<study key>/<instance key>.dcm   every accepted instance, DICOM Part 10 file
    incoming/tmp*.dcm                      instances arriving (TMPDIR of appliance-dicom.service)
    outbox/<instance key>.dcm              results waiting to be sent (see outbox.py)
    studies.db                             instances, studies, outbox rows (WAL, FULL)
    .spool.lock                            flock: instance writers share it, pruning holds it alone

Keys are SHA-256 prefixes of the UIDs, so paths and log lines never carry a UID (UIDs are
identifiers of a patient's study; tests/test_no_phi_in_logs.py). An instance is acknowledged only
after its file is fsynced and renamed into place *and* its row is committed; a crash between the
two leaves a file without a row, which :meth:`StudyStore.recover` indexes again on start.

A study's life (a transition table, pynetdicom ``fsm.py`` style)::

    OPEN --quiet time passed--> CLOSED --worker takes it, attempts + 1--> ANALYSING
    ANALYSING --analysis ends, attempts = 0--> DONE | FAILED | UNROUTED
    any state --new instance arrives--> OPEN      ANALYSING --crash, then start--> CLOSED
    ANALYSING --the service stops (SIGTERM), attempts - 1--> CLOSED    (:meth:`StudyStore.release`)
    ANALYSING, attempts > worker.MAX_ATTEMPTS (each earlier take ended in a crash) --> FAILED
    DONE | FAILED | UNROUTED, all results sent, studies_retention_days passed --> deleted
    (:meth:`StudyStore.prune`, run hourly by appliance/housekeeping.py)

``attempts`` counts the takes since an analysis last ended: a study whose analysis kills the
process (out of memory, a decoder's segfault) would otherwise be taken again at every start and
kill the worker each time, and no other study would ever be analysed.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from appliance import retention
from appliance.config import Config
from appliance.dicom.checks import InstanceInfo, RefusedInstanceError, StoreStatus
from appliance.errors import StorageError
from appliance.fsutil import atomic_writer, flocked, fsync_dir, move_durably
from appliance.setup.clock import SET_CLOCK_HINT
from appliance.sqlitedb import Database, rollback

log = logging.getLogger(__name__)

# The first release's schema: changes go to _MIGRATIONS, below.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    last_at REAL NOT NULL,
    model TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    series_uid TEXT NOT NULL,
    sop_class TEXT NOT NULL,
    modality TEXT NOT NULL,
    file TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    study_uid TEXT NOT NULL,
    sop_uid TEXT NOT NULL,
    kind TEXT NOT NULL,
    file TEXT NOT NULL,
    destination TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    last_error TEXT,
    UNIQUE (sop_uid, destination)
);
"""


# Each change to _SCHEMA since the first release, in order (sqlitedb.Database runs the ones a
# database lacks): _SCHEMA itself stays as databases in the field were made from it.
_MIGRATIONS = (
    # 1: how many times the worker took the study since an analysis of it last ended
    "ALTER TABLE studies ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
)


class StudyState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    ANALYSING = "analysing"
    DONE = "done"
    FAILED = "failed"
    UNROUTED = "unrouted"


_FULL_HINT = (
    "Free space on the state partition (lower studies_retention_days: see `appliance run`'s "
    "housekeeping line) and ask the sender to resend."
)
FINISHED = (StudyState.DONE, StudyState.FAILED, StudyState.UNROUTED)
SPOOL_LOCK = ".spool.lock"


def key_of(uid: str) -> str:
    """The name a UID gets on disk and in logs: not the UID, stable, collision-free in practice."""
    return hashlib.sha256(uid.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Study:
    """One study as the queue sees it."""

    study_uid: str
    key: str
    state: StudyState
    calling_ae: str
    last_at: float
    model: str | None
    attempts: int = 0  # takes since an analysis of it last ended


@dataclass(frozen=True)
class Instance:
    """One spooled instance as the index knows it: enough to reference it, not its contents."""

    sop_uid: str
    series_uid: str
    sop_class: str
    path: Path


def dicom_dir(config: Config) -> Path:
    """Everything the DICOM path keeps: peers, routing rules, spool, outbox, database."""
    return config.state_dir / "dicom"


class StudyStore:
    """The spool folders and ``studies.db``; safe to use from many threads and processes."""

    def __init__(self, root: Path, clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self.clock = clock  # stamps ``last_at``, which retention counts from
        self.spool = root / "spool"
        self.outbox_dir = root / "outbox"
        self.incoming = root / "incoming"
        for folder in (root, self.spool, self.outbox_dir, self.incoming):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = Database(root / "studies.db", _SCHEMA, "DICOM study database", _MIGRATIONS)
        # One connection for every thread, serialised: pynetdicom runs each association in a new
        # thread, and a connection per thread would pile up for the life of the service.
        self._conn = self.db.conn
        self._lock = threading.RLock()

    @classmethod
    def open(cls, config: Config) -> StudyStore:
        """The box's store; a study's time is stamped by :class:`~appliance.retention.StampClock`
        (never behind the time retention counts from), so that images received while the clock
        is behind do not go at the first round after it is set right."""
        return cls(dicom_dir(config), retention.StampClock(config.state_dir / retention.FILE_NAME))

    def close(self) -> None:
        self.db.close()

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        """Run one statement (autocommit, durable) and return its rows."""
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def update(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        """Run one changing statement; return how many rows it changed."""
        with self._lock:
            return self._conn.execute(sql, args).rowcount

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (BEGIN IMMEDIATE): everything inside commits together, and no
        other thread of this process runs a statement meanwhile."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._conn.execute("COMMIT")
            except BaseException:
                rollback(self._conn)  # a failed COMMIT too: never leave it open for the next
                raise

    # -- receiving ---------------------------------------------------------------------------

    def write_instance(self, encoded: bytes | Path, info: InstanceInfo, calling_ae: str) -> Path:
        """Store one accepted instance durably (file fsynced and renamed, row committed).

        ``encoded`` is the Part 10 file (preamble, meta, data set): its bytes, or a finished file
        (the receiver's, written as the instance arrived), which is moved into the spool. Raises
        StorageError, or RefusedInstanceError when the SOP Instance UID is already stored in
        another study.
        """
        path = self.spool / key_of(info.study_uid) / f"{key_of(info.sop_uid)}.dcm"
        # Shared with other writers, never with prune(): it cannot delete this study's folder
        # between the file and its row.
        with self.spool_lock(shared=True):
            resent = path.exists()  # a copy already acknowledged, with its row
            try:
                if not path.parent.is_dir():
                    path.parent.mkdir(exist_ok=True, mode=0o700)
                    fsync_dir(self.spool)  # the new folder's name is durable with its file
                if isinstance(encoded, Path):
                    move_durably(encoded, path)
                else:
                    with atomic_writer(path) as fh:
                        fh.write(encoded)
            except OSError as exc:
                raise StorageError(
                    f"cannot write to the DICOM spool {self.spool}: {exc.strerror}.", _FULL_HINT
                ) from exc
            try:
                self._index(info, path, calling_ae, self.clock())
            except RefusedInstanceError:
                path.unlink(missing_ok=True)  # this copy only: the row names the other study's
                raise
            except StorageError:
                # Not acknowledged: the file must not stay for recover() to index at the next
                # start, as if it had been received (a resent copy keeps its earlier row).
                if not resent:
                    with suppress(OSError):
                        path.unlink()
                raise
        return path

    @contextmanager
    def spool_lock(self, *, shared: bool, wait: bool = True) -> Iterator[bool]:
        """Hold ``.spool.lock`` (flock, so across processes: the receiver may run in
        appliance-dicom.service, pruning in ``appliance run``). Yields whether it is held: False
        only when ``wait`` is False and another holder excludes this one."""
        with flocked(self.root / SPOOL_LOCK, shared=shared, wait=wait) as fd:
            yield fd is not None

    def _index(self, info: InstanceInfo, path: Path, calling_ae: str, now: float) -> None:
        try:
            self._insert(info, path, calling_ae, now)
        except sqlite3.Error as exc:  # locked by the other process for too long, disk full, I/O
            raise StorageError(
                f"cannot record an instance in the DICOM study database {self.db.path}: {exc}.",
                "Free space on the state partition (lower studies_retention_days: see `appliance "
                "run`'s housekeeping line) and check that it is writable; the sender was told the "
                "instance failed and should resend it.",
            ) from exc

    def _insert(self, info: InstanceInfo, path: Path, calling_ae: str, now: float) -> None:
        with self.transaction():
            # A SOP Instance UID names one instance of one study: replacing the row would move
            # the instance out of its study and leave its file for recover() to move it back.
            owner = self.execute(
                "SELECT study_uid FROM instances WHERE sop_uid = ?", (info.sop_uid,)
            )
            if owner and owner[0][0] != info.study_uid:
                raise RefusedInstanceError(
                    StoreStatus.DATASET_MISMATCH, "SOPInstanceUID already used in another study"
                )
            self.execute(
                "INSERT INTO studies (study_uid, key, state, calling_ae, last_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(study_uid) DO UPDATE SET "
                "state = excluded.state, last_at = excluded.last_at, "
                "calling_ae = excluded.calling_ae",
                (info.study_uid, key_of(info.study_uid), StudyState.OPEN, calling_ae, now),
            )
            self.execute(
                "INSERT OR REPLACE INTO instances (sop_uid, study_uid, series_uid, sop_class, "
                "modality, file, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (info.sop_uid, info.study_uid, info.series_uid, info.sop_class, info.modality,
                 str(path.relative_to(self.root)), now),
            )  # fmt: skip

    def recover(self, *, requeue: bool = True) -> int:
        """Index spool files that have no row (a crash after the rename); return how many.

        With ``requeue`` (the process that runs the worker, as it starts), also puts studies a
        crash left in ANALYSING back to CLOSED, so they are analysed again; their attempts stay
        counted. Only that process may: in another, they may be under analysis right now.
        """
        known = {row[0] for row in self.execute("SELECT file FROM instances")}
        found = 0
        for path in sorted(self.spool.glob("*/*.dcm")):
            rel = str(path.relative_to(self.root))
            if rel in known:
                continue
            try:
                ds = dcmread(path, stop_before_pixels=True)
                info = InstanceInfo(
                    str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.StudyInstanceUID),
                    str(ds.SeriesInstanceUID), str(ds.get("Modality") or "OT"),
                )  # fmt: skip
            except (InvalidDicomError, AttributeError, OSError) as exc:
                log.warning("dicom: spool file %s unreadable, left in place: %s", rel, exc)
                continue
            try:
                self._index(info, path, "RECOVERED", path.stat().st_mtime)
            except RefusedInstanceError as exc:
                log.warning("dicom: spool file %s left in place: %s", rel, exc.comment)
                continue
            found += 1
        if requeue:
            self.execute(
                "UPDATE studies SET state = ? WHERE state = ?",
                (StudyState.CLOSED, StudyState.ANALYSING),
            )
        return found

    # -- the study queue ---------------------------------------------------------------------

    def close_quiet(self, quiet_seconds: float, now: float | None = None) -> int:
        """Close every open study that received nothing for ``quiet_seconds``; return how many.

        An open study whose last instance arrived "after" ``now`` was received before the wall
        clock was set back (ADR 0004): its quiet time counts from ``now`` instead, so it closes
        ``quiet_seconds`` later, not once the clock has caught up (a year later, for a year).
        """
        now = self.clock() if now is None else now
        with self.transaction():
            ahead = self.execute(
                "SELECT COUNT(*), MAX(last_at) FROM studies WHERE state = ? AND last_at > ?",
                (StudyState.OPEN, now),
            )[0]
            if ahead[0]:
                self.execute(
                    "UPDATE studies SET last_at = ? WHERE state = ? AND last_at > ?",
                    (now, StudyState.OPEN, now),
                )
            closed = self.update(
                "UPDATE studies SET state = ? WHERE state = ? AND last_at <= ?",
                (StudyState.CLOSED, StudyState.OPEN, now - quiet_seconds),
            )
        if ahead[0] and ahead[1] - now > quiet_seconds:  # not a receiver a moment ahead of us
            log.warning(
                "dicom: %d open study(ies) received up to %.1f days after the time the clock "
                "shows now: it was set back. They close %.0f s from now. %s",
                ahead[0], (ahead[1] - now) / 86400, quiet_seconds, SET_CLOCK_HINT,
            )  # fmt: skip
        return closed

    def take_closed(self) -> Study | None:
        """Move one closed study to ANALYSING, counting the attempt, and return it (None when
        there is none)."""
        with self.transaction():
            rows = self.execute(
                "SELECT study_uid FROM studies WHERE state = ? ORDER BY last_at LIMIT 1",
                (StudyState.CLOSED,),
            )
            if not rows:
                return None
            row = rows[0]
            self.execute(
                "UPDATE studies SET state = ?, attempts = attempts + 1 WHERE study_uid = ?",
                (StudyState.ANALYSING, row[0]),
            )
        return self.study(row[0])

    def finish(
        self, study_uid: str, state: StudyState, model: str | None = None, error: str | None = None
    ) -> None:
        """Record the end of an analysis, unless new instances reopened the study meanwhile;
        either way the analysis ended, so its attempts no longer count."""
        self.execute(
            "UPDATE studies SET attempts = 0, state = CASE WHEN state = ?1 THEN ?2 ELSE state END, "
            "model = CASE WHEN state = ?1 THEN ?3 ELSE model END, "
            "error = CASE WHEN state = ?1 THEN ?4 ELSE error END WHERE study_uid = ?5",
            (StudyState.ANALYSING, state, model, error, study_uid),
        )

    def release(self, study_uid: str) -> None:
        """Give back a study the worker took but did not finish because it was told to stop:
        CLOSED again (unless new instances reopened it), that take not counted as an attempt."""
        self.execute(
            "UPDATE studies SET attempts = MAX(attempts - 1, 0), "
            "state = CASE WHEN state = ?1 THEN ?2 ELSE state END WHERE study_uid = ?3",
            (StudyState.ANALYSING, StudyState.CLOSED, study_uid),
        )

    def study(self, study_uid: str) -> Study | None:
        rows = self.execute(
            "SELECT study_uid, key, state, calling_ae, last_at, model, attempts FROM studies "
            "WHERE study_uid = ?",
            (study_uid,),
        )
        if not rows:
            return None
        row = rows[0]
        return Study(row[0], row[1], StudyState(row[2]), row[3], row[4], row[5], row[6])

    def studies(self) -> list[Study]:
        rows = self.execute("SELECT study_uid FROM studies ORDER BY last_at")
        return [s for s in (self.study(r[0]) for r in rows) if s is not None]

    def instance_files(self, study_uid: str) -> list[Path]:
        return [instance.path for instance in self.instances(study_uid)]

    def instances(self, study_uid: str) -> list[Instance]:
        """The study's instances, by series then SOP Instance UID (the order they are read)."""
        rows = self.execute(
            "SELECT sop_uid, series_uid, sop_class, file FROM instances WHERE study_uid = ? "
            "ORDER BY series_uid, sop_uid",
            (study_uid,),
        )
        return [Instance(r[0], r[1], r[2], self.root / r[3]) for r in rows]

    # -- retention -----------------------------------------------------------------------------

    def prunable(self, before: float) -> list[Study]:
        """Finished studies (done, failed, unrouted) whose last instance arrived before ``before``
        and whose results have all been sent: what :meth:`prune` deletes."""
        rows = self.execute(
            "SELECT study_uid FROM studies WHERE state IN (?, ?, ?) AND last_at < ? AND NOT "
            "EXISTS (SELECT 1 FROM outbox o WHERE o.study_uid = studies.study_uid AND "
            "o.state != 'sent') ORDER BY last_at",  # 'sent': outbox.RowState.SENT
            (*FINISHED, before),
        )
        return [s for s in (self.study(r[0]) for r in rows) if s is not None]

    def prune(self, before: float, record: Callable[[Study, int], None]) -> int | None:
        """Delete the spooled images and the rows of :meth:`prunable` studies; return how many
        studies went, or None when an instance was being written (the next round tries again).

        For each study, ``record(study, instances)`` runs first (the audit record: a crash then
        leaves a record whose deletion the next round completes, never a deletion without
        one; if it raises, nothing of that study is deleted). Then the files go, durably, and
        only then the rows: a crash in between leaves rows of missing files in a finished study,
        never spooled files without rows, which :meth:`recover` would take for a new study and
        analyse and send again. Raises StorageError when a file cannot be deleted.
        """
        with self.spool_lock(shared=False, wait=False) as held:
            if not held:
                return None
            studies = self.prunable(before)
            for study in studies:
                files = self.instance_files(study.study_uid)
                record(study, len(files))
                self._delete_files(self.spool / study.key, files)
                with self.transaction():
                    self.execute("DELETE FROM instances WHERE study_uid = ?", (study.study_uid,))
                    self.execute("DELETE FROM outbox WHERE study_uid = ?", (study.study_uid,))
                    self.execute("DELETE FROM studies WHERE study_uid = ?", (study.study_uid,))
            return len(studies)

    def _delete_files(self, folder: Path, files: list[Path]) -> None:
        try:
            for path in files:
                path.unlink(missing_ok=True)
            try:
                folder.rmdir()  # empty now, unless something else is in it: then it stays
            except FileNotFoundError:
                pass
            except OSError:
                fsync_dir(folder)
                return
            fsync_dir(self.spool)
        except OSError as exc:
            raise StorageError(
                f"cannot delete the spooled study {folder.name}: {exc.strerror}.",
                "Check that the state partition is mounted read-write; the next round tries "
                "again.",
            ) from exc

    def instance_uids(self) -> set[str]:
        return {r[0] for r in self.execute("SELECT sop_uid FROM instances")}


# -- reading a study back: a thin-slice CT has thousands of images, never all in memory at once --


def read_header(instance: Instance) -> Dataset:
    """``instance``'s data set up to its pixel data (what routing and results need); raises
    StorageError."""
    return _read(instance, pixels=False)


def read_images(instances: Iterable[Instance]) -> Iterator[Dataset]:
    """Each instance whole, pixel data included, read only when the caller asks for the next:
    one image in memory at a time, unless the caller keeps them. Raises StorageError."""
    for instance in instances:
        yield _read(instance, pixels=True)  # not held here while the caller has it


def _read(instance: Instance, *, pixels: bool) -> Dataset:
    try:
        return dcmread(instance.path, stop_before_pixels=not pixels)
    except OSError as exc:
        raise _unreadable(instance, exc.strerror or type(exc).__name__) from exc
    except (InvalidDicomError, ValueError, EOFError) as exc:  # the type: a message may quote values
        raise _unreadable(instance, type(exc).__name__) from exc


def _unreadable(instance: Instance, reason: str) -> StorageError:
    return StorageError(
        f"the spooled instance {instance.path.name} cannot be read ({reason}).",
        "Ask the sender to send the study again; if it happens again, check the state "
        "partition's disk.",
    )
