"""The study worker on studies that would sink it: one too big to hold in memory at once, one
whose analysis kills the process every time. Real store, spool files, audit log and OpenVINO."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import tracemalloc
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from appliance.audit.log import AuditLog
from appliance.audit.records import AuditEvent, Outcome, hash_subject
from appliance.config import Config
from appliance.dicom.analysis import Findings, ModelAnalyser, slice_to_input, summarise
from appliance.dicom.outbox import Outbox
from appliance.dicom.peers import Peer, save_peers
from appliance.dicom.store import StudyState, StudyStore, key_of
from appliance.dicom.worker import StudyWorker

from .conftest import PATIENT_ID, PATIENT_NAME, make_image
from .crashing_worker import AUDIT_KEY, CRASH
from .served import MODEL, Source, serve_conv_model

ROOT = Path(__file__).resolve().parents[2]
SIDE = 512  # pixels a side, as a CT slice: 512 KiB stored, 1 MiB once the model has it as float32
FEW, MANY = 20, 200


def spool(store: StudyStore, images: Iterable[Dataset]) -> None:
    """Leave ``images`` in the spool as the receiver does, for ``recover`` to index."""
    for image in images:
        folder = store.spool / key_of(str(image.StudyInstanceUID))
        folder.mkdir(exist_ok=True)
        image.save_as(folder / f"{key_of(str(image.SOPInstanceUID))}.dcm", enforce_file_format=True)


def route(config: Config, rules: list[dict[str, str]]) -> None:
    (config.state_dir / "dicom" / "routing.json").write_text(json.dumps({"rules": rules}))


@pytest.fixture(scope="module")
def conv_model() -> Source:
    return serve_conv_model()


@dataclass
class Measured:
    """The analyser, and the most memory held above what was held when it started."""

    analyser: ModelAnalyser
    peak: int = 0

    def analyse(self, datasets: Iterable[Dataset], **options: bool) -> Findings:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        findings = self.analyser.analyse(datasets, **options)
        self.peak = tracemalloc.get_traced_memory()[1] - before
        return findings


def _peaks(state_dir: Path, source: Source, slices: int) -> tuple[int, int]:
    """The most memory (Python and numpy allocations) the worker held while it handled one study
    of ``slices`` images, from the study's reading to its results, and while it analysed it."""
    config = Config(state_dir=state_dir, study_quiet_seconds=0)
    store = StudyStore.open(config)
    study, series = generate_uid(), generate_uid()
    spool(store, (make_image("CT", study=study, series=series, rows=SIDE, columns=SIDE, seed=i)
                  for i in range(slices)))  # fmt: skip
    assert store.recover() == slices
    route(config, [{"modality": "CT", "model": MODEL}])
    audit = AuditLog(config.audit_dir, AUDIT_KEY, None)
    analyser = Measured(ModelAnalyser(source, MODEL))
    worker = StudyWorker(store, Outbox(config, store, lambda: audit), lambda _model: analyser,
                         lambda: audit, quiet_seconds=0)  # fmt: skip
    gc.collect()
    tracemalloc.start()
    try:
        handled = worker.step()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        row = store.study(study)
        store.close()
    assert handled == 1 and row is not None and row.state is StudyState.DONE, row
    return peak, analyser.peak


def test_a_big_study_is_analysed_in_the_memory_of_one_slice(
    tmp_path: Path, conv_model: Source
) -> None:
    # A thin-slice CT has thousands of images: held whole, it takes the box's memory with it.
    _peaks(tmp_path / "warm-up", conv_model, 2)  # lazy imports, the first inference
    few, analysing_few = _peaks(tmp_path / "few", conv_model, FEW)
    many, analysing_many = _peaks(tmp_path / "many", conv_model, MANY)
    mib = [f"{value / 2**20:.1f} MiB" for value in (few, many, analysing_few, analysing_many)]
    figures = f"peak {mib[0]} for {FEW} slices, {mib[1]} for {MANY}; analysing {mib[2]}, {mib[3]}"
    # The analysis holds one slice whatever the study's size...
    assert analysing_many < 1.25 * analysing_few, figures
    # ... and what grows with the study is each image's index row, score and SR item, which
    # weigh a small part of a slice's pixels (the SR's items most: highdicom's data sets).
    per_slice = (many - few) / (MANY - FEW)
    assert per_slice < SIDE * SIDE * 2 / 4, f"{per_slice / 1024:.0f} KiB a slice more; {figures}"


def _worker_round(state_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    return subprocess.run(
        [sys.executable, "-m", "tests.dicom.crashing_worker", str(state_dir)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_a_study_that_kills_the_worker_is_set_aside_and_the_others_are_analysed(
    tmp_path: Path,
) -> None:
    config = Config(state_dir=tmp_path / "state")
    store = StudyStore.open(config)
    poison = make_image("MR")  # routed to an analysis that kills the worker process
    healthy = [make_image("CT", study=generate_uid(), seed=i) for i in range(2)]
    healthy_study = str(healthy[0].StudyInstanceUID)
    for image in healthy[1:]:
        image.StudyInstanceUID = healthy_study
    spool(store, [poison, *healthy])
    store.close()
    route(config, [{"modality": "MR", "model": CRASH}, {"modality": "CT", "model": MODEL}])
    save_peers(config, [Peer("PACS", "127.0.0.1", 104, "main PACS", results_destination=True)])
    # Each start recovers the spool and takes the poison study again, until it is set aside.
    rounds = [_worker_round(config.state_dir) for _ in range(4)]
    logs = "".join(r.stderr for r in rounds)
    assert [r.returncode for r in rounds] == [-signal.SIGKILL] * 3 + [0], logs
    store = StudyStore.open(config)
    try:
        failed, done = store.study(str(poison.StudyInstanceUID)), store.study(healthy_study)
        assert failed is not None and failed.state is StudyState.FAILED, failed
        assert done is not None and done.state is StudyState.DONE, done
        (error,) = store.execute(
            "SELECT error FROM studies WHERE study_uid = ?", (str(poison.StudyInstanceUID),)
        )[0]
        assert "3 times" in error and "send the study again" in error, error
        kinds = store.execute("SELECT kind FROM outbox WHERE study_uid = ?", (healthy_study,))
        assert sorted(k for (k,) in kinds) == ["sc", "sr"]
    finally:
        store.close()
    assert f"study {key_of(str(poison.StudyInstanceUID))} not analysed" in rounds[-1].stderr
    for phi in (PATIENT_ID, PATIENT_NAME, str(poison.StudyInstanceUID), healthy_study):
        assert phi not in logs, f"{phi!r} in the logs"
    audit = AuditLog(config.audit_dir, AUDIT_KEY, None)
    inference = {(r.subject, r.outcome) for r in audit.records()
                 if r.event == AuditEvent.INFERENCE}  # fmt: skip
    assert inference == {
        (hash_subject(AUDIT_KEY, str(poison.StudyInstanceUID)), Outcome.FAILURE),
        (hash_subject(AUDIT_KEY, healthy_study), Outcome.SUCCESS),
    }


def test_an_orderly_stop_mid_study_gives_the_study_back_uncounted(
    tmp_path: Path, conv_model: Source
) -> None:
    """SIGTERM (a shutdown, an update's restart) arrives while a long study is analysed: the
    study goes back to the queue, the take not counted as a crash, and nothing half-done stays."""
    config = Config(state_dir=tmp_path, study_quiet_seconds=0)
    store = StudyStore.open(config)
    study = generate_uid()
    spool(store, (make_image("CT", study=study, seed=i) for i in range(10)))
    assert store.recover() == 10
    route(config, [{"modality": "CT", "model": MODEL}])
    audit = AuditLog(config.audit_dir, AUDIT_KEY, None)
    seen: list[Dataset] = []

    def to_input(ds: Dataset) -> Any:
        seen.append(ds)
        if len(seen) == 4:  # the service's stop, from its signal handler's thread
            worker.stop()
        return slice_to_input(ds)

    def worker_with(analyser: ModelAnalyser) -> StudyWorker:
        return StudyWorker(store, Outbox(config, store, lambda: audit), lambda _m: analyser,
                           lambda: audit, quiet_seconds=0)  # fmt: skip

    worker = worker_with(ModelAnalyser(conv_model, MODEL, to_input=to_input, summary=summarise))
    try:
        assert worker.step() == 1
        row = store.study(study)
        assert row is not None and (row.state, row.attempts) == (StudyState.CLOSED, 0), row
        assert len(seen) == 4, "the analysis went on after the stop"
        assert store.execute("SELECT COUNT(*) FROM outbox")[0][0] == 0
        assert not [r for r in audit.records() if r.event == AuditEvent.INFERENCE]
        assert worker.step() == 0, "a stopped worker took another study"
        # The next start analyses it, as if the stop had never happened.
        assert worker_with(ModelAnalyser(conv_model, MODEL)).step() == 1
        row = store.study(study)
        assert row is not None and (row.state, row.attempts) == (StudyState.DONE, 0), row
    finally:
        store.close()
