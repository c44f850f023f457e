"""The study worker: closes quiet studies, routes each to a model, analyses it, queues results.

One :meth:`StudyWorker.step` closes every study quiet for ``quiet_seconds``, then takes closed
studies one at a time: the first image's header → routing rule → analyser, fed the images from
the spool one at a time → SR + SC (results.py) → files into the outbox and, in one transaction,
the outbox rows and the study's DONE state. Memory does not grow with the study: an image's pixel
data is read when it is analysed and dropped after, and only the highest-scoring image's heat map
is kept; what stays for every image is its index row, its score and its item in the SR. The
analysis is audited (INFERENCE, subject the study UID, stored hashed; the model name and
version). A study no rule matches ends UNROUTED; one whose analysis fails ends FAILED with the
reason (a new instance reopens it). A crash mid-analysis leaves it ANALYSING, which
:meth:`StudyStore.recover` turns back into CLOSED at the next start; a study taken more than
``max_attempts`` times without its analysis ending (each time the process died: out of memory, a
decoder's segfault) ends FAILED without being analysed again, so that it no longer takes the
worker down at every start and the other studies are analysed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from pydicom.dataset import Dataset

from appliance.audit.auditor import Auditor
from appliance.audit.records import AuditEvent, Outcome
from appliance.dicom.analysis import Analyser, AnalysisError, Findings, load_rules, route
from appliance.dicom.outbox import Outbox, destinations
from appliance.dicom.peers import Peer
from appliance.dicom.results import ResultObject, result_objects
from appliance.dicom.store import (
    Instance,
    Study,
    StudyState,
    StudyStore,
    read_header,
    read_images,
)
from appliance.errors import ApplianceError

log = logging.getLogger(__name__)
ACTOR = "dicom-worker"


class _StoppedError(Exception):
    """The service is stopping: the study's analysis ends between two images."""


MAX_ATTEMPTS = 3  # analyses that never ended (the worker died) before a study is set aside


class StudyWorker:
    """Analyses closed studies; ``analyser_for(model)`` gives the analyser of a model name."""

    def __init__(
        self,
        store: StudyStore,
        outbox: Outbox,
        analyser_for: Callable[[str], Analyser],
        auditor: Callable[[], Auditor],
        *,
        quiet_seconds: float,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.analyser_for = analyser_for
        self.auditor = auditor
        self.quiet_seconds = quiet_seconds
        self.max_attempts = max_attempts
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Ask the worker to stop at the next image (from another thread): the study it was
        analysing goes back to CLOSED, its attempt not counted, and is analysed at the next
        start. An orderly stop (SIGTERM, an update's restart) is not a crash: counted as one,
        three restarts during one long study would set it aside."""
        self._stopping.set()

    def step(self) -> int:
        """Close quiet studies and analyse every closed one; return how many were handled."""
        self.store.close_quiet(self.quiet_seconds)
        handled = 0
        while not self._stopping.is_set() and (study := self.store.take_closed()) is not None:
            self.process(study)
            handled += 1
        return handled

    def _until_stopped(self, images: Iterator[Dataset]) -> Iterator[Dataset]:
        for image in images:
            if self._stopping.is_set():
                raise _StoppedError
            yield image

    def process(self, study: Study) -> StudyState:
        """Analyse one study the worker has taken (state ANALYSING); return its end state."""
        if study.attempts > self.max_attempts:
            return self._fail(study, None, _set_aside(study.attempts - 1))
        if study.attempts > 1:  # the journal then names the study each crash came with
            log.warning("dicom: study %s: analysis attempt %d of %d, the last one never ended",
                        study.key, study.attempts, self.max_attempts)  # fmt: skip
        try:
            images = self.store.instances(study.study_uid)
            # One header routes the study and heads its SR; a study without images is unrouted.
            first = [read_header(images[0])] if images else []
            model = route(load_rules(self.store.root), first)
        except (ApplianceError, OSError, ValueError) as exc:
            return self._fail(study, None, f"study unreadable: {exc}")
        if model is None:
            log.info("dicom: study %s (%d images): no routing rule matches, not analysed",
                     study.key, len(images))  # fmt: skip
            self.store.finish(study.study_uid, StudyState.UNROUTED)
            return StudyState.UNROUTED
        return self._analyse(study, model, images, first[0])

    def _analyse(
        self, study: Study, model: str, images: list[Instance], first: Dataset
    ) -> StudyState:
        """Run ``model`` on the routed study, image by image; queue its results or fail it."""
        try:
            feed = self._until_stopped(read_images(images))
            findings = self.analyser_for(model).analyse(feed, keep_heatmaps=False)
            worst = read_header(_instance(images, findings.worst[0]))
            objects = result_objects(first, worst, images, findings)
            written = self.outbox.write_objects(objects)
            peers = destinations(self.outbox.config)
        except _StoppedError:
            self.store.release(study.study_uid)
            log.info("dicom: study %s: analysis stopped by the service's stop; it is analysed "
                     "again at the next start", study.key)  # fmt: skip
            return StudyState.CLOSED
        except ApplianceError as exc:
            return self._fail(study, model, exc.message)
        except Exception as exc:  # a model or image the code did not foresee: fail this study only
            # The type only: a message about a data set may quote its values (patient data).
            log.warning("dicom: study %s: unexpected %s in analysis", study.key, type(exc).__name__)
            return self._fail(study, model, f"unexpected {type(exc).__name__}")
        self._done(study, model, findings, len(images), written, peers)
        return StudyState.DONE

    def _done(
        self, study: Study, model: str, findings: Findings, images: int,
        written: list[tuple[ResultObject, str]], peers: list[Peer],
    ) -> None:  # fmt: skip
        """Audit the analysis, then queue its results and end the study DONE in one commit."""
        label = f"{findings.provenance.get('model_name', model)} " + findings.provenance.get(
            "model_version", ""
        )
        self.auditor().append(
            AuditEvent.INFERENCE, actor=ACTOR, role="service", outcome=Outcome.SUCCESS,
            subject=study.study_uid, model=label.strip(),
            detail={"channel": "dicom", "images": images, "results": len(written),
                    "destinations": len(peers)},
        )  # fmt: skip
        with self.store.transaction():
            self.outbox.queue_rows(study.study_uid, written, peers)
            self.store.finish(study.study_uid, StudyState.DONE, model)
        if not peers:
            log.warning("dicom: study %s analysed but no peer receives results (mark the "
                        "PACS as results destination in the peer list)", study.key)  # fmt: skip
        log.info("dicom: study %s analysed by %s: score %.3f, %d result(s) queued for %d peer(s)",
                 study.key, label.strip(), findings.score, len(written), len(peers))  # fmt: skip

    def _fail(self, study: Study, model: str | None, why: str) -> StudyState:
        log.warning("dicom: study %s not analysed: %s", study.key, why)
        try:
            self.auditor().append(
                AuditEvent.INFERENCE, actor=ACTOR, role="service", outcome=Outcome.FAILURE,
                subject=study.study_uid, model=model,
                detail={"channel": "dicom", "reason": why[:200]},
            )  # fmt: skip
        finally:
            self.store.finish(study.study_uid, StudyState.FAILED, model, why)
        return StudyState.FAILED


def _instance(images: list[Instance], sop_uid: str) -> Instance:
    """The image the analyser named; raises AnalysisError when it named one not in the study."""
    for image in images:
        if image.sop_uid == sop_uid:
            return image
    raise AnalysisError(
        "the analyser's highest-scoring image is not one of the study's.",
        "Report this to the model's vendor: its analyser must name the images it was given.",
    )


def _set_aside(crashes: int) -> str:
    return (
        f"its analysis was started {crashes} times and each time the worker died before it ended "
        "(out of memory, or a crash: see the journal around those restarts), so it is set aside "
        "for the other studies to be analysed. Check the study's images; the technician can send "
        "the study again, which reopens it for analysis."
    )
