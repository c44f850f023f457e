"""The outbox: results queued durably and sent with C-STORE to the PACS peers, with retries.

A result object is written to ``<state>/dicom/outbox/`` (fsynced, renamed) and one row per
destination is committed in the same transaction that marks its study DONE, so a result is
either queued for every destination or (after a crash) its study is analysed again. A row is
tried when its ``next_at`` has come; a failure pushes ``next_at`` out by a doubling delay
(``base_delay`` up to ``max_delay``), stored in the row, so the schedule survives restarts. The
wall clock may be set back (ADR 0004): a row whose ``next_at`` is more than ``max_delay`` ahead
of it was scheduled by a clock that has since gone back, so it is due now rather than after the
clock catches up (a year, for a clock set back a year); no delay ever runs past ``max_delay``.
A clock set forward makes every waiting row due at once, which sends them early, never late. Each
attempt is audited (EXPORT, subject the study UID, which the audit log stores hashed; details
hold the destination AE, the object kind, the attempt number and the DIMSE status or reason,
never patient data). A file is removed once every destination has it.

Row states: PENDING --C-STORE success--> SENT; PENDING --failure--> PENDING (later).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from appliance.audit.auditor import Auditor
from appliance.audit.records import AuditEvent, Outcome
from appliance.config import Config
from appliance.dicom.peers import DEFAULT_AE_TITLE, Peer, load_peers
from appliance.dicom.results import ResultObject
from appliance.dicom.store import StudyStore, key_of
from appliance.errors import ApplianceError, StorageError
from appliance.fsutil import atomic_writer
from appliance.setup.clock import SET_CLOCK_HINT

log = logging.getLogger(__name__)
ACTOR = "dicom-outbox"
# Warning statuses (PS3.4 B.2.3: coercion, elements discarded) still mean the PACS stored it.
_STORED = {0x0000, 0xB000, 0xB006, 0xB007}


class RowState(StrEnum):
    PENDING = "pending"
    SENT = "sent"


@dataclass(frozen=True)
class OutboxRow:
    id: int
    study_uid: str
    sop_uid: str
    kind: str
    file: str
    destination: str
    attempts: int
    next_at: float


def destinations(config: Config) -> list[Peer]:
    """The peers results go to (``results_destination`` set in peers.json)."""
    return [p for p in load_peers(config) if p.results_destination]


class Outbox:
    """Queue and send result objects; ``auditor`` is asked for lazily (it unseals a TPM key)."""

    def __init__(
        self,
        config: Config,
        store: StudyStore,
        auditor: Callable[[], Auditor],
        *,
        calling_ae: str = DEFAULT_AE_TITLE,
        base_delay: float = 10.0,
        max_delay: float = 900.0,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.auditor = auditor
        self.calling_ae = calling_ae
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.timeout = timeout
        self.clock = clock

    def write_objects(self, objects: Sequence[ResultObject]) -> list[tuple[ResultObject, str]]:
        """Write each object's file durably; return them with their paths (relative)."""
        written = []
        for obj in objects:
            path = self.store.outbox_dir / f"{key_of(str(obj.dataset.SOPInstanceUID))}.dcm"
            try:
                with atomic_writer(path) as fh:
                    obj.dataset.save_as(fh, enforce_file_format=True)
            except OSError as exc:
                raise StorageError(
                    f"cannot write to the DICOM outbox {path.parent}: {exc.strerror}.",
                    "Free space on the state partition; the study is analysed again later.",
                ) from exc
            written.append((obj, str(path.relative_to(self.store.root))))
        return written

    def queue_rows(
        self, study_uid: str, written: Sequence[tuple[ResultObject, str]], peers: Sequence[Peer]
    ) -> None:
        """Insert one row per object and destination; call inside ``store.transaction()``."""
        now = self.clock()
        for obj, rel in written:
            for peer in peers:
                self.store.execute(
                    "INSERT OR IGNORE INTO outbox (study_uid, sop_uid, kind, file, destination, "
                    "state, next_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (study_uid, str(obj.dataset.SOPInstanceUID), obj.kind, rel, peer.ae_title,
                     RowState.PENDING, now),
                )  # fmt: skip

    def pending(self) -> list[OutboxRow]:
        return self._rows("SELECT {} FROM outbox WHERE state = ? ORDER BY id", (RowState.PENDING,))

    def sent(self) -> list[OutboxRow]:
        return self._rows("SELECT {} FROM outbox WHERE state = ? ORDER BY id", (RowState.SENT,))

    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[OutboxRow]:
        cols = "id, study_uid, sop_uid, kind, file, destination, attempts, next_at"
        return [OutboxRow(*r) for r in self.store.execute(sql.format(cols), args)]

    def send_due(self) -> int:
        """Try every row whose time has come, one association per destination; return how
        many objects were stored by their PACS."""
        now = self.clock()
        due = self._rows(
            "SELECT {} FROM outbox WHERE state = ? AND (next_at <= ? OR next_at > ?) ORDER BY id",
            (RowState.PENDING, now, now + self.max_delay),
        )
        stranded = [r.next_at for r in due if r.next_at > now + self.max_delay]
        if stranded:  # each row once: trying it reschedules it on the clock as it is now
            log.warning(
                "dicom: %d result(s) were due up to %.1f days after the time the clock shows now: "
                "it was set back. They are sent now. %s",
                len(stranded), (max(stranded) - now) / 86400, SET_CLOCK_HINT,
            )  # fmt: skip
        peers = {p.ae_title: p for p in load_peers(self.config)}
        sent = 0
        for destination in sorted({r.destination for r in due}):
            rows = [r for r in due if r.destination == destination]
            peer = peers.get(destination)
            if peer is None:
                for row in rows:
                    self._failed(row, "peer no longer configured")
                continue
            sent += self._send(peer, rows)
        return sent

    def _send(self, peer: Peer, rows: list[OutboxRow]) -> int:
        from pynetdicom import AE

        datasets = {}
        for row in rows:
            try:
                datasets[row.id] = dcmread(self.store.root / row.file)
            except (OSError, InvalidDicomError) as exc:
                self._failed(row, f"result file unreadable ({type(exc).__name__})")
        rows = [row for row in rows if row.id in datasets]
        if not rows:
            return 0
        ae = AE(ae_title=self.calling_ae)
        for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets.values()}):
            ae.add_requested_context(sop_class)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
        if not assoc.is_established:
            why = "association rejected" if assoc.is_rejected else "no answer"
            for row in rows:
                self._failed(row, why)
            return 0
        sent = 0
        try:
            for row in rows:
                status = assoc.send_c_store(datasets[row.id])
                code = getattr(status, "Status", None)
                if code in _STORED:
                    self._sent(row, int(code))
                    sent += 1
                else:
                    self._failed(row, "no response" if code is None else f"status 0x{code:04X}")
        finally:
            assoc.release()
        return sent

    def _audit(self, row: OutboxRow, outcome: Outcome, status: str) -> None:
        self.auditor().append(
            AuditEvent.EXPORT, actor=ACTOR, role="service", outcome=outcome,
            subject=row.study_uid,
            detail={"channel": "dicom", "destination": row.destination, "object": row.kind,
                    "attempt": row.attempts + 1, "status": status},
        )  # fmt: skip

    def _sent(self, row: OutboxRow, code: int) -> None:
        self._audit(row, Outcome.SUCCESS, f"0x{code:04X}")
        with self.store.transaction():
            self.store.execute(
                "UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = NULL "
                "WHERE id = ?",
                (RowState.SENT, row.id),
            )
            left = self.store.execute(
                "SELECT COUNT(*) FROM outbox WHERE file = ? AND state != ?",
                (row.file, RowState.SENT),
            )[0][0]
        if left == 0:
            Path(self.store.root / row.file).unlink(missing_ok=True)
        log.info("dicom: result %s (%s) stored by %s", key_of(row.sop_uid), row.kind,
                 row.destination)  # fmt: skip

    def _failed(self, row: OutboxRow, why: str) -> None:
        delay = min(self.base_delay * 2**row.attempts, self.max_delay)
        try:
            self._audit(row, Outcome.FAILURE, why)
        except ApplianceError as exc:  # the retry is what matters; the next attempt audits
            log.warning("dicom: the failed send could not be audited: %s", exc)
        self.store.execute(
            "UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE id = ?",
            (self.clock() + delay, why, row.id),
        )
        log.warning("dicom: result %s (%s) to %s failed (%s); attempt %d, next in %.0f s",
                    key_of(row.sop_uid), row.kind, row.destination, why, row.attempts + 1,
                    delay)  # fmt: skip
