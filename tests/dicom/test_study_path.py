"""The whole study path on real parts: a modality sends a study over DICOM, the study closes, a
routing rule picks a tiny conv model (OpenVINO, from the encrypted store through the real
registry), SR and heat-map SC go through the outbox to a fake PACS (a real pynetdicom SCP), and
every step is audited without patient data in logs or audit details."""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import openvino as ov
import pytest
from pydicom.uid import RLELossless, generate_uid

from appliance.audit.records import AuditEvent, Outcome, hash_subject
from appliance.config import Config
from appliance.dicom.analysis import ModelAnalyser
from appliance.dicom.peers import Peer, save_peers
from appliance.dicom.service import DicomService, start_service
from appliance.dicom.store import StudyState
from appliance.inference.registry import ModelRegistry
from appliance.runtime import Runtime, open_runtime
from appliance.store.slots import ModelStore, SlotName
from appliance.trust import core
from appliance.trust.keys import KeyName
from appliance.trust.tpm import open_tpm

from .conftest import PATIENT_ID, PATIENT_NAME, SCU_AE, make_image, send
from .pacs import SC_CLASS, SR_CLASS, FakePacs
from .served import MODEL, conv_model_files


@dataclass
class Box:
    config: Config
    rt: Runtime
    registry: ModelRegistry
    pacs: FakePacs

    def start(self, **kw: Any) -> DicomService:
        return start_service(
            self.config, lambda: self.rt.audit,
            analyser_for=lambda model: ModelAnalyser(self.registry, model),
            host="127.0.0.1", port=0, poll_seconds=3600, **kw,
        )  # fmt: skip


@pytest.fixture
def box(config: Config, pacs: FakePacs) -> Iterator[Box]:
    """Enrolled on a real swtpm, the conv model in the encrypted store, served by the registry."""
    config = Config(state_dir=config.state_dir, tcti=config.tcti, study_quiet_seconds=1)
    with open_tpm(config.device_tcti()) as tpm:
        core.enroll(tpm, config)
        key = core.key_store(config).unseal(tpm, KeyName.MODEL_STORE)
    store = ModelStore(config.models_dir)
    store.install(MODEL, SlotName.A, conv_model_files(), key=key, version="0.1.0",
                  bundle_sha256="ab" * 32, epoch=0)  # fmt: skip
    store.activate(MODEL, SlotName.A)
    registry = ModelRegistry(store, lambda: key, ov.Core(), lambda _m: "CPU")
    assert registry.refresh() == [MODEL]
    save_peers(config, [
        Peer(SCU_AE, "127.0.0.1", 104, "CT scanner"),
        Peer("PACS", "127.0.0.1", pacs.port, "main PACS", results_destination=True),
    ])  # fmt: skip
    (config.state_dir / "dicom" / "routing.json").write_text(
        json.dumps({"rules": [{"modality": "CT", "model": MODEL}]})
    )
    with open_runtime(config) as rt:
        yield Box(config, rt, registry, pacs)
    del registry
    # OpenVINO objects left in reference cycles must be freed here, in the main thread: freed
    # later by a collection that happens to run in one of OpenVINO's own threads, they abort
    # the interpreter ("Resource deadlock avoided").
    gc.collect()


def _until(what: Callable[[], bool], service: DicomService, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        service.poll()
        if what():
            return
        time.sleep(0.2)
    raise AssertionError("the study path did not finish in time")


def test_study_is_analysed_and_results_reach_the_pacs(
    box: Box, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    study, series = generate_uid(), generate_uid()
    images = [make_image("CT", study=study, series=series, seed=i) for i in range(3)]
    service = box.start()
    try:
        assert service.receiver is not None
        assert [s.Status for s in send(service.receiver.port, *images)] == [0, 0, 0]
        _until(lambda: len(box.pacs.received) == 2, service)
        state = service.store.study(study)
        assert state is not None and state.state is StudyState.DONE and state.model == MODEL
    finally:
        service.stop()
    by_class = {str(ds.SOPClassUID): ds for ds in box.pacs.received}
    sr, sc = by_class[SR_CLASS], by_class[SC_CLASS]
    for result in (sr, sc):
        assert result.StudyInstanceUID == study, "results must join the source study"
        assert result.PatientID == PATIENT_ID
    texts = {item.ConceptNameCodeSequence[0].CodeMeaning: item.get("TextValue")
             for item in sr.ContentSequence}  # fmt: skip
    assert texts["Algorithm Name"] == MODEL and texts["Algorithm Version"] == "0.1.0"
    assert texts["Model bundle SHA-256"] == "ab" * 32 and texts["Inference device"] == "CPU"
    assert texts["OpenVINO version"] == ov.get_version()
    referenced = {
        ref.ReferencedSOPInstanceUID
        for ev in sr.CurrentRequestedProcedureEvidenceSequence
        for series_ in ev.ReferencedSeriesSequence
        for ref in series_.ReferencedSOPSequence
    }
    assert referenced == {img.SOPInstanceUID for img in images}
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID in referenced
    assert (sc.Rows, sc.Columns) == (16, 16) and sc.pixel_array.max() > 0
    # Audited: one analysis, one successful send per object; subjects hashed, no patient data.
    records = list(box.rt.audit.records())
    hashed = hash_subject(box.rt.audit_key, study)
    inference = [r for r in records if r.event == AuditEvent.INFERENCE]
    exports = [r for r in records if r.event == AuditEvent.EXPORT]
    assert [(r.subject, r.outcome) for r in inference] == [(hashed, Outcome.SUCCESS)]
    assert sorted(str(r.detail["object"]) for r in exports) == ["sc", "sr"]
    assert all(r.subject == hashed and r.detail["destination"] == "PACS" for r in exports)
    audit_text = "".join(p.read_text() for p in box.config.audit_dir.glob("*.log"))
    for phi in (PATIENT_NAME, PATIENT_ID, study, series, str(images[0].SOPInstanceUID)):
        assert phi not in caplog.text, f"{phi!r} in the logs"
        assert phi not in audit_text, f"{phi!r} in the audit trail"


def test_a_compressed_study_is_analysed_as_well(box: Box) -> None:
    # RLE Lossless, as a modality may send it: stored as received, decoded by the worker.
    study, series = generate_uid(), generate_uid()
    images = [make_image("CT", study=study, series=series, seed=i) for i in range(2)]
    for image in images:
        image.compress(RLELossless)
    service = box.start()
    try:
        assert service.receiver is not None
        assert [s.Status for s in send(service.receiver.port, *images, ts=RLELossless)] == [0, 0]
        _until(lambda: len(box.pacs.received) == 2, service)
        state = service.store.study(study)
        assert state is not None and state.state is StudyState.DONE, state
    finally:
        service.stop()
    (sc,) = (ds for ds in box.pacs.received if str(ds.SOPClassUID) == SC_CLASS)
    assert sc.pixel_array.max() > 0


def test_unrouted_study_is_not_analysed(box: Box) -> None:
    service = box.start()
    try:
        assert service.receiver is not None
        image = make_image("MR")
        assert send(service.receiver.port, image)[0].Status == 0
        study = str(image.StudyInstanceUID)
        _until(lambda: service.store.study(study).state is StudyState.UNROUTED, service)  # type: ignore[union-attr]
    finally:
        service.stop()
    assert box.pacs.received == []


def test_outbox_retries_with_backoff_across_restarts(box: Box) -> None:
    box.pacs.refuse = True
    service = box.start(retry_delay=0.5)
    try:
        assert service.receiver is not None and service.outbox is not None
        assert send(service.receiver.port, make_image("CT"))[0].Status == 0
        _until(lambda: box.pacs.calls >= 2, service)
        rows = service.outbox.pending()
        assert len(rows) == 2 and all(r.attempts >= 1 for r in rows)
    finally:
        service.stop()
    box.pacs.refuse = False
    service = box.start(retry_delay=0.5)  # a restart: the queue and its schedule are on disk
    try:
        assert service.outbox is not None
        outbox = service.outbox
        _until(lambda: not outbox.pending(), service)
        assert len(outbox.sent()) == 2
        assert not list(service.store.outbox_dir.glob("*.dcm")), "sent files are removed"
    finally:
        service.stop()
    assert len(box.pacs.received) == 2
    exports = [r for r in box.rt.audit.records() if r.event == AuditEvent.EXPORT]
    outcomes = [r.outcome for r in exports]
    assert outcomes.count(Outcome.FAILURE) >= 2 and outcomes.count(Outcome.SUCCESS) == 2
    assert {r.detail["status"] for r in exports if r.outcome == Outcome.FAILURE} == {
        "status 0xA700"
    }


def test_unreachable_pacs_waits_longer_each_time(box: Box) -> None:
    box.pacs.stop()
    clock = [1000.0]
    service = box.start(retry_delay=10)
    try:
        assert service.receiver is not None and service.outbox and service.worker
        outbox, worker = service.outbox, service.worker
        outbox.clock, outbox.timeout = (lambda: clock[0]), 2
        assert send(service.receiver.port, make_image("CT"))[0].Status == 0
        deadline = time.monotonic() + 30
        while not worker.step() and time.monotonic() < deadline:
            time.sleep(0.2)
        delays = []
        for _ in range(3):
            clock[0] += 10_000
            outbox.send_due()
            row = outbox.pending()[0]
            next_at = service.store.execute("SELECT next_at FROM outbox WHERE id = ?", (row.id,))[
                0
            ][0]
            delays.append(round(next_at - clock[0]))
        assert delays == [10, 20, 40]
        assert {r.attempts for r in outbox.pending()} == {3}
    finally:
        service.stop()


def test_study_routed_to_a_missing_model_fails_audited_and_sends_nothing(box: Box) -> None:
    (box.config.state_dir / "dicom" / "routing.json").write_text(
        json.dumps({"rules": [{"modality": "CT", "model": "not-installed"}]})
    )
    service = box.start()
    try:
        assert service.receiver is not None and service.outbox is not None
        image = make_image("CT")
        assert send(service.receiver.port, image)[0].Status == 0
        study = str(image.StudyInstanceUID)
        _until(lambda: service.store.study(study).state is StudyState.FAILED, service)  # type: ignore[union-attr]
        assert service.outbox.pending() == [] and box.pacs.calls == 0
    finally:
        service.stop()
    (record,) = [r for r in box.rt.audit.records() if r.event == AuditEvent.INFERENCE]
    assert record.outcome == Outcome.FAILURE and "not-installed" in str(record.detail["reason"])


def test_the_receiving_service_leaves_a_study_under_analysis_alone(box: Box) -> None:
    """On the box two processes share the spool, and appliance-dicom.service (receiver and
    outbox) starts after appliance.service, whose worker may be analysing a study by then. Its
    start must not queue that study again: it would be analysed twice, its results sent twice."""
    image = make_image("CT")
    study = str(image.StudyInstanceUID)
    worker = box.start(receive=False)  # appliance run's part: the worker
    try:
        receiving = start_service(box.config, lambda: box.rt.audit, analyser_for=None,
                                  host="127.0.0.1", port=0, poll_seconds=3600)  # fmt: skip
        try:
            assert receiving.receiver is not None
            assert send(receiving.receiver.port, image)[0].Status == 0
        finally:
            receiving.stop()
        worker.store.close_quiet(0)
        assert worker.store.take_closed() is not None  # the worker is on it
        receiving = start_service(box.config, lambda: box.rt.audit, analyser_for=None,
                                  host="127.0.0.1", port=0, poll_seconds=3600)  # fmt: skip
        receiving.stop()  # restarted, as on a crash (Restart=on-failure)
        assert worker.store.study(study).state is StudyState.ANALYSING  # type: ignore[union-attr]
    finally:
        worker.stop()
    worker = box.start(receive=False)  # the worker's own restart does queue it again
    try:
        _until(lambda: worker.store.study(study).state is StudyState.DONE, worker)  # type: ignore[union-attr]
    finally:
        worker.stop()
