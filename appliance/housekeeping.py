"""Housekeeping: what keeps the state partition from filling, run hourly by ``appliance run``.

Each kind of data goes after its retention (Config), and every deletion is audited first:

- results older than ``results_retention_days`` (90): one RESULTS_PRUNE record with the count,
  then the rows (:meth:`ResultStore.prune`). An imaging result holds its heat map, about 90 kB;
- finished studies' spooled images whose last instance arrived more than
  ``studies_retention_days`` (30) ago, once every result of the study was sent: one
  STUDY_DELETED record per study (its UID hashed, as every audit subject), then its files and
  rows (:meth:`StudyStore.prune`);
- audit log files older than ``audit_retention_days`` (6 years): :meth:`AuditLog.prune`, which
  records what it deletes in the chain itself.

A round that fails for one kind logs why and goes on with the others; the next round tries again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from appliance import retention
from appliance.api.results import ResultStore
from appliance.audit.log import SYSTEM_ACTOR, AuditLog
from appliance.audit.records import AuditEvent, Outcome
from appliance.config import Config
from appliance.dicom.store import Study, StudyStore
from appliance.errors import ApplianceError
from appliance.retention import RetentionClock

log = logging.getLogger(__name__)

DAY = 86400.0
INTERVAL_SECONDS = 3600.0


@dataclass(frozen=True)
class RoundReport:
    """What one round deleted; None for a kind that was skipped (not here, busy, or failed)."""

    results: int | None
    studies: int | None
    audit_files: int | None

    def describe(self) -> str:
        def n(value: int | None) -> str:
            return "skipped" if value is None else str(value)

        return (f"{n(self.results)} result(s), {n(self.studies)} study(ies), "
                f"{n(self.audit_files)} audit file(s) deleted")  # fmt: skip


@dataclass
class Housekeeper:
    """One round on demand (:meth:`round`), or every ``interval`` seconds on a thread."""

    config: Config
    audit: AuditLog
    results: ResultStore | None
    studies: StudyStore | None
    clock: Callable[[], float] = time.time
    uptime: Callable[[], float] = retention.uptime
    interval: float = INTERVAL_SECONDS
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def describe(self) -> str:
        """One line for the supervisor's report."""
        c = self.config
        parts = [f"results kept {c.results_retention_days} days" if self.results else None,
                 f"finished studies' images {c.studies_retention_days} days" if self.studies
                 else None,
                 f"audit log {c.audit_retention_days} days"]  # fmt: skip
        return f"every {self.interval / 60:.0f} min: " + ", ".join(p for p in parts if p)

    def round(self) -> RoundReport:
        """Delete what is past its retention now; never raises for a storage or TPM failure.

        "Now" is the :class:`~appliance.retention.RetentionClock`'s: a clock set ahead by
        mistake deletes nothing before its time.
        """
        clock = RetentionClock(self.config.state_dir / retention.FILE_NAME, self.clock, self.uptime)
        try:
            now = clock.now()
        except ApplianceError as exc:  # its state cannot be saved: this round cannot be trusted
            log.warning("housekeeping: nothing pruned this round: %s %s", exc.message,
                        exc.hint or "")  # fmt: skip
            return RoundReport(None, None, None)
        report = RoundReport(
            self._guard("results", lambda: self._results(now)),
            self._guard("studies", lambda: self._studies(now)),
            self._guard("audit log", lambda: self.audit.prune(datetime.fromtimestamp(now, UTC))),
        )
        if report.results or report.studies or report.audit_files:
            log.info("housekeeping: %s", report.describe())
        return report

    def _results(self, now: float) -> int | None:
        if self.results is None:
            return None
        days = self.config.results_retention_days
        before = now - days * DAY
        count = self.results.older_than(before)
        if count == 0:
            return 0
        self.audit.append(
            AuditEvent.RESULTS_PRUNE, actor=SYSTEM_ACTOR, outcome=Outcome.SUCCESS,
            detail={"results": count, "retention_days": days},
        )  # fmt: skip
        return self.results.prune(before)

    def _studies(self, now: float) -> int | None:
        if self.studies is None:
            return None
        days = self.config.studies_retention_days

        def record(study: Study, instances: int) -> None:
            self.audit.append(
                AuditEvent.STUDY_DELETED, actor=SYSTEM_ACTOR, outcome=Outcome.SUCCESS,
                subject=study.study_uid,
                detail={"instances": instances, "state": study.state.value,
                        "retention_days": days},
            )  # fmt: skip

        gone = self.studies.prune(now - days * DAY, record)
        if gone is None:
            log.info("housekeeping: the DICOM spool is busy receiving; studies wait a round")
        return gone

    @staticmethod
    def _guard(what: str, job: Callable[[], int | None]) -> int | None:
        try:
            return job()
        except ApplianceError as exc:
            log.warning("housekeeping: %s not pruned this round: %s %s", what, exc.message,
                        exc.hint or "")  # fmt: skip
        except (sqlite3.Error, OSError) as exc:
            log.warning("housekeeping: %s not pruned this round: %s", what, exc)
        return None

    def start(self) -> None:
        """Run a round now and then every ``interval`` seconds, on a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="housekeeping", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                self.round()
            except Exception as exc:  # the loop must outlive a bug in one round
                log.error("housekeeping: round failed (%s); retrying later", type(exc).__name__)  # noqa: TRY400
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
