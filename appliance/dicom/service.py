"""The DICOM service: receiver, study worker and outbox put together and kept running.

Two ways to run it. ``appliance run`` (the supervisor) runs all three in its process, the worker
using the API's model registry. On the box, appliance-dicom.service runs ``appliance dicom
serve``: the receiver and the outbox (network work, no model: its unit forbids the JIT that
OpenVINO needs), while ``appliance run`` with ``dicom_in_run = false`` runs only the worker.
Both share the spool and ``studies.db`` on the state partition (SQLite WAL serves two processes).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from appliance.audit.auditor import Auditor
from appliance.config import Config
from appliance.dicom.analysis import Analyser
from appliance.dicom.outbox import Outbox, destinations
from appliance.dicom.receiver import Receiver, start_receiver
from appliance.dicom.store import StudyStore
from appliance.dicom.worker import StudyWorker
from appliance.errors import ApplianceError

log = logging.getLogger(__name__)


@dataclass
class DicomService:
    """The running parts; :meth:`stop` stops them in order (receiver first)."""

    config: Config
    store: StudyStore
    receiver: Receiver | None
    worker: StudyWorker | None
    outbox: Outbox | None
    poll_seconds: float
    _stop: threading.Event = field(default_factory=threading.Event)
    _round: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def describe(self) -> str:
        """One line for the supervisor's report: where it listens and what it does."""
        parts = []
        if self.receiver:
            rx = self.receiver
            parts.append(f"AE {rx.ae_title} on {rx.host}:{rx.port} (C-ECHO; C-STORE of CT, MR, "
                         "CR, DX, SC from configured peers)")  # fmt: skip
        else:
            parts.append("receiver in appliance-dicom.service")
        if self.worker:
            parts.append(f"studies close after {self.config.study_quiet_seconds} s quiet")
        if self.outbox:
            try:
                names = ", ".join(p.ae_title for p in destinations(self.config))
            except ApplianceError:
                names = "peer list unreadable"
            parts.append(f"results to {names or 'no peer yet (console: PACS peers)'}")
        return "; ".join(parts)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="dicom-service", daemon=True)
        self._thread.start()

    def poll(self) -> None:
        """One round of the background work (public so tests can drive it step by step).

        Rounds never overlap: two at once would both send the rows that are due.
        """
        with self._round:
            if self.worker:
                self.worker.step()
            if self.outbox:
                self.outbox.send_due()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception as exc:  # the loop must outlive one bad study or a full disk
                # The type only: a message about a data set may quote its values (patient data).
                log.error("dicom: background round failed (%s); retrying", type(exc).__name__)  # noqa: TRY400

    def stop(self) -> None:
        if self.receiver:
            self.receiver.stop()
        if self.worker:
            self.worker.stop()  # a study under analysis goes back to the queue, not counted
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=60)
        self.store.close()


def start_service(
    config: Config,
    auditor: Callable[[], Auditor],
    *,
    analyser_for: Callable[[str], Analyser] | None,
    receive: bool = True,
    host: str = "0.0.0.0",  # noqa: S104 (the clinic's network; nftables limits who reaches it)
    port: int | None = None,
    poll_seconds: float = 1.0,
    retry_delay: float = 10.0,
) -> DicomService:
    """Recover the spool, then start what is asked: the receiver and outbox (``receive``), the
    study worker (when ``analyser_for`` is given). Raises ApplianceError (e.g. port in use)."""
    store = StudyStore.open(config)
    # On the box appliance-dicom.service starts after appliance.service, whose worker may be
    # analysing a study by then: only the worker's own process puts ANALYSING studies back.
    found = store.recover(requeue=analyser_for is not None)
    if found:
        log.warning("dicom: %d spooled instance(s) indexed again after an unclean stop", found)
    outbox = Outbox(config, store, auditor, base_delay=retry_delay) if receive else None
    worker = None
    if analyser_for is not None:
        # The worker queues results even when this process does not send them.
        queue = outbox or Outbox(config, store, auditor, base_delay=retry_delay)
        worker = StudyWorker(
            store, queue, analyser_for, auditor, quiet_seconds=config.study_quiet_seconds
        )
    receiver = None
    if receive:
        try:
            receiver = start_receiver(config, store, host=host, port=port)
        except OSError as exc:
            store.close()
            if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
                raise ApplianceError(  # the address is wrong, not the port
                    f"the DICOM receiver cannot listen on {host}: {exc.strerror}.",
                    "Give --host an address of this machine, or leave it out to listen on all.",
                ) from exc
            raise ApplianceError(
                f"the DICOM receiver cannot listen on port {config.dicom_port}: {exc.strerror}.",
                "Stop whatever uses the port (appliance-dicom.service?) or set dicom_port.",
            ) from exc
    service = DicomService(config, store, receiver, worker, outbox, poll_seconds)
    service.start()
    return service
