"""Housekeeping: results and finished studies' images go after their retention, audited first;
nothing that is not finished, not yet sent or still young goes; a receiver writing into the
spool and a pruner never meet; and the pruned spool never comes back as a "recovered" study."""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from appliance.api.results import ResultNotFoundError, ResultStore
from appliance.audit import AuditEvent, AuditLog, TpmCheckpointAnchor, hash_subject, verify
from appliance.audit.records import Outcome
from appliance.config import Config
from appliance.dicom.checks import InstanceInfo
from appliance.dicom.store import StudyState, StudyStore
from appliance.errors import StorageError
from appliance.housekeeping import DAY, Housekeeper, RoundReport
from appliance.retention import RELEASED, RetentionClock, StampClock
from appliance.trust.swtpm import Swtpm

INDEX = 0x01500022
CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def key() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def audit(tmp_path: Path, key: bytes, swtpm: Swtpm) -> AuditLog:
    return AuditLog(tmp_path / "audit", key, TpmCheckpointAnchor(swtpm.tcti, INDEX))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StudyStore]:
    st = StudyStore(tmp_path / "dicom")
    yield st
    st.close()


@pytest.fixture
def results(tmp_path: Path) -> Iterator[ResultStore]:
    rs = ResultStore(tmp_path / "results.db")
    yield rs
    rs.close()


def _put(results: ResultStore, request_id: str) -> None:
    results.put(request_id, actor="pacs", route="v2-infer", provenance={"model": "m 1"},
                inputs_sha256="0" * 64, outputs=[{"name": "score", "data": [0.5]}])  # fmt: skip


def _study(store: StudyStore, state: StudyState, instances: int = 2) -> str:
    """A study with ``instances`` spooled files, moved to ``state`` as the worker would."""
    uid = generate_uid()
    for _ in range(instances):
        info = InstanceInfo(CT, generate_uid(), uid, generate_uid(), "CT")
        store.write_instance(b"DICM image bytes", info, "CT1")
    if state is not StudyState.OPEN:
        store.execute("UPDATE studies SET state = ? WHERE study_uid = ?", (state, uid))
    return uid


def _keeper(config: Config, audit: AuditLog, results: ResultStore | None,
            store: StudyStore | None, days_later: float) -> Housekeeper:  # fmt: skip
    """A housekeeper ``days_later``: the wall clock and the time since boot both moved on."""
    booted = time.clock_gettime(time.CLOCK_BOOTTIME)
    return Housekeeper(config, audit, results, store, clock=lambda: time.time() + days_later * DAY,
                       uptime=lambda: booted + days_later * DAY)  # fmt: skip


def test_results_go_after_their_retention_and_the_trail_says_how_many(
    tmp_path: Path, audit: AuditLog, results: ResultStore
) -> None:
    config = Config(state_dir=tmp_path, results_retention_days=90)
    for n in range(3):
        _put(results, f"r{n}")
    young = _keeper(config, audit, results, None, 89).round()
    assert young.results == 0 and results.count() == 3, "results deleted before 90 days"
    assert not [r for r in audit.records() if r.event is AuditEvent.RESULTS_PRUNE]

    report = _keeper(config, audit, results, None, 91).round()
    assert report.results == 3 and results.count() == 0
    with pytest.raises(ResultNotFoundError, match="no result with request id 'r1'") as gone:
        results.get("r1")
    assert "kept results_retention_days" in (gone.value.hint or "")
    prunes = [r for r in audit.records() if r.event is AuditEvent.RESULTS_PRUNE]
    assert [p.detail for p in prunes] == [{"results": 3, "retention_days": 90}]


def test_only_finished_and_fully_sent_studies_past_retention_lose_their_images(
    tmp_path: Path, key: bytes, swtpm: Swtpm, audit: AuditLog, store: StudyStore
) -> None:
    config = Config(state_dir=tmp_path, studies_retention_days=30)
    done, failed = _study(store, StudyState.DONE), _study(store, StudyState.FAILED, 1)
    unsent = _study(store, StudyState.DONE)
    store.execute(
        "INSERT INTO outbox (study_uid, sop_uid, kind, file, destination, state, next_at) "
        "VALUES (?, ?, 'sr', 'outbox/x.dcm', 'PACS', 'pending', 0)", (unsent, generate_uid()),
    )  # fmt: skip
    kept = {s: _study(store, s) for s in (StudyState.OPEN, StudyState.CLOSED,
                                           StudyState.ANALYSING)}  # fmt: skip
    folders = {uid: store.instance_files(uid)[0].parent for uid in (done, failed, unsent)}

    assert _keeper(config, audit, None, store, 29).round().studies == 0, "deleted before 30 days"
    report = _keeper(config, audit, None, store, 31).round()

    assert report.studies == 2
    for uid in (done, failed):
        assert store.study(uid) is None and not folders[uid].exists()
    assert (
        store.study(unsent) is not None and folders[unsent].exists()
    ), "the images of a study whose result was not yet sent were deleted"
    for uid in kept.values():
        assert all(p.exists() for p in store.instance_files(uid)), "an unfinished study lost files"
    records = [r for r in audit.records() if r.event is AuditEvent.STUDY_DELETED]
    assert sorted(r.subject or "" for r in records) == sorted(
        hash_subject(key, uid) for uid in (done, failed)
    )
    assert {r.detail["instances"] for r in records} == {1, 2}
    assert all(r.subject not in (done, failed) for r in records), "a raw study UID in the trail"
    assert verify(audit.directory, key, TpmCheckpointAnchor(swtpm.tcti, INDEX)).ok
    assert store.recover() == 0, "pruned images came back as a recovered study"


def test_a_study_whose_deletion_cannot_be_audited_keeps_everything(
    tmp_path: Path, store: StudyStore
) -> None:
    uid = _study(store, StudyState.DONE)
    files = store.instance_files(uid)

    def refuse(_study: object, _instances: int) -> None:
        raise StorageError("the audit log is full.", "Free space.")

    with pytest.raises(StorageError, match="audit log is full"):
        store.prune(time.time() + DAY, refuse)
    assert all(p.exists() for p in files) and store.study(uid) is not None


def test_the_receiver_waits_for_a_prune_and_a_prune_skips_a_busy_spool(store: StudyStore) -> None:
    with store.spool_lock(shared=True):  # an instance being written, here or in another process
        assert store.prune(time.time() + 365 * DAY, lambda *_: None) is None

    written = threading.Event()
    info = InstanceInfo(CT, generate_uid(), generate_uid(), generate_uid(), "CT")
    with store.spool_lock(shared=False) as held:  # a prune in progress
        assert held

        def write() -> None:
            store.write_instance(b"x", info, "CT1")
            written.set()

        writer = threading.Thread(target=write)
        writer.start()
        assert not written.wait(0.5), "an instance was written into the spool during a prune"
    writer.join(timeout=30)
    assert written.is_set() and store.instance_uids() == {info.sop_uid}


LOCKER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_SH)
print("held", flush=True)
sys.stdin.readline()
"""


def test_a_receiver_in_another_process_holds_off_the_prune(store: StudyStore) -> None:
    uid = _study(store, StudyState.DONE)
    lock = store.root / ".spool.lock"
    with subprocess.Popen([sys.executable, "-c", LOCKER, str(lock)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as other:  # fmt: skip
        assert other.stdout is not None and other.stdin is not None
        assert other.stdout.readline().strip() == "held"
        assert store.prune(time.time() + 365 * DAY, lambda *_: None) is None
        other.stdin.write("\n")
        other.stdin.flush()
    assert store.prune(time.time() + 365 * DAY, lambda *_: None) == 1
    assert store.study(uid) is None


def test_the_thread_runs_a_round_at_start_and_stops(
    tmp_path: Path, audit: AuditLog, results: ResultStore
) -> None:
    _put(results, "old")
    keeper = _keeper(Config(state_dir=tmp_path), audit, results, None, 1000)
    keeper.start()
    try:
        for _ in range(100):
            if results.count() == 0:
                break
            time.sleep(0.05)
    finally:
        keeper.stop()
    assert results.count() == 0
    assert keeper.describe().startswith("every 60 min: results kept 90 days")


class _Box:
    """One box's clocks, moved by the test: the wall clock (which anyone at the console may
    set) and the time since boot (which no one can)."""

    def __init__(self) -> None:
        self.wall, self.up, self.boot = time.time(), 1000.0, "boot-1"

    def run(self, seconds: float, *, clock_set: float = 0.0) -> None:
        """``seconds`` of real time pass; the wall clock is also set ``clock_set`` seconds on."""
        self.wall += seconds + clock_set
        self.up += seconds

    def reboot(self, off_for: float) -> None:
        self.wall += off_for
        self.up, self.boot = 30.0, "boot-2"

    def clock(self, tmp_path: Path) -> RetentionClock:
        return RetentionClock(tmp_path / "retention.json", lambda: self.wall, lambda: self.up,
                              lambda: self.boot)  # fmt: skip

    def stamp(self, tmp_path: Path) -> StampClock:
        """The stamp clock of this boot (the real boot id, as the housekeeper's clock has it)."""
        return StampClock(tmp_path / "retention.json", lambda: self.wall, lambda: self.up)

    def keeper(self, config: Config, audit: AuditLog, results: ResultStore | None,
               store: StudyStore | None) -> Housekeeper:  # fmt: skip
        return Housekeeper(config, audit, results, store, clock=lambda: self.wall,
                           uptime=lambda: self.up)  # fmt: skip


def test_a_clock_set_ten_years_ahead_deletes_nothing_before_its_time(
    tmp_path: Path, key: bytes, swtpm: Swtpm, results: ResultStore, store: StudyStore,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    box = _Box()
    # Small log files, so that the trail spans several and whole files could go.
    audit = AuditLog(
        tmp_path / "trail",
        key,
        TpmCheckpointAnchor(swtpm.tcti, INDEX),
        max_file_bytes=2048,
        clock=lambda: datetime.fromtimestamp(box.wall, UTC),
    )
    config = Config(state_dir=tmp_path, results_retention_days=90, studies_retention_days=30)
    keeper = box.keeper(config, audit, results, store)
    _put(results, "this morning's")
    study = _study(store, StudyState.DONE)
    for n in range(20):
        audit.append(AuditEvent.LOGIN, actor=f"tech{n}", outcome=Outcome.SUCCESS)
    trail = sorted(audit.directory.glob("*.log"))
    assert len(trail) > 2
    assert keeper.round() == RoundReport(0, 0, 0)

    box.run(3600, clock_set=10 * 365 * DAY)  # 2036 typed for 2026 in the wizard, an hour ago
    assert keeper.round() == RoundReport(0, 0, 0)
    assert results.count() == 1 and store.study(study) is not None
    assert all(f.exists() for f in trail), "the audit trail lost files to a wrong clock"
    assert verify(audit.directory, key, TpmCheckpointAnchor(swtpm.tcti, INDEX)).ok
    assert "the clock is 3650 days ahead of the time retention counts from" in caplog.text

    # Retention goes on meanwhile, at twice real time: 46 days count as 92.
    box.run(46 * DAY)
    report = keeper.round()
    assert (report.results, report.studies) == (1, 1)
    assert all(f.exists() for f in trail), "six years of audit retention are not 92 days"


def test_retention_clock_never_runs_more_than_twice_real_time_nor_backwards(tmp_path: Path) -> None:
    box = _Box()
    start = box.wall
    assert box.clock(tmp_path).now() == start  # the first round trusts the clock
    box.run(DAY, clock_set=365 * DAY)
    assert box.clock(tmp_path).now() == pytest.approx(start + 2 * DAY)
    box.run(DAY, clock_set=-366 * DAY)  # put right: the clock is a day behind the trusted time
    assert box.clock(tmp_path).now() == pytest.approx(start + 2 * DAY - DAY)
    box.run(3 * DAY)  # the clock passes the trusted time, which follows it again
    assert box.clock(tmp_path).now() == pytest.approx(box.wall) == start + 4 * DAY


def test_a_box_that_was_off_catches_up_in_as_long_as_it_was_off(tmp_path: Path) -> None:
    box = _Box()
    start = box.clock(tmp_path).now()
    box.reboot(off_for=100 * DAY)  # the time off cannot be told from a clock set ahead
    assert box.clock(tmp_path).now() == pytest.approx(start + 60)  # 30 s up, counted twice
    box.run(99 * DAY)  # the gap closes at real time's pace
    assert box.wall - box.clock(tmp_path).now() == pytest.approx(DAY - 60)
    box.run(DAY)
    assert box.clock(tmp_path).now() == pytest.approx(box.wall)


def test_a_damaged_retention_state_falls_back_to_the_clock_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = _Box()
    (tmp_path / "retention.json").write_text("{half")
    assert box.clock(tmp_path).now() == box.wall
    assert "retention.json unreadable" in caplog.text


def test_a_new_box_whose_clock_is_behind_is_not_held_back_once_it_is_set_right(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A dead RTC boots a new box years back; the wizard then sets the clock right. That is a
    correction, not a jump: the retention clock starts no earlier than this release."""
    box = _Box()
    box.wall = datetime(2023, 5, 1, tzinfo=UTC).timestamp()  # systemd's own floor, about
    assert box.clock(tmp_path).now() == box.wall  # behind: counts from the clock, deletes less
    assert "before this software was made" in caplog.text
    box.run(3600, clock_set=RELEASED + 7 * DAY - box.wall)  # set right, a week after release
    box.run(7 * DAY)
    assert box.clock(tmp_path).now() == pytest.approx(box.wall), "still held back"


def test_a_result_made_while_the_clock_is_behind_is_not_pruned_once_it_is_set_right(
    tmp_path: Path, audit: AuditLog
) -> None:
    """The clock is set a year back by mistake (or a dead RTC boots the box behind) and results
    come in; then it is put right. Stamped by the wall clock, they would look a year old and go
    at the next round; stamped by the retention floor, they keep their 90 days."""
    box = _Box()
    config = Config(state_dir=tmp_path, results_retention_days=90)
    results = ResultStore(tmp_path / "results.db", clock=box.stamp(tmp_path))
    keeper = box.keeper(config, audit, results, None)
    keeper.round()  # the first round: the retention clock trusts the (right) clock
    box.run(3600, clock_set=-365 * DAY)
    _put(results, "made while the clock was behind")
    made = results.get("made while the clock was behind").created
    assert made == pytest.approx(box.wall + 365 * DAY)  # the real time: trusted + time since
    box.run(DAY, clock_set=365 * DAY)  # put right a day later
    assert keeper.round().results == 0
    assert results.count() == 1
    box.run(91 * DAY)
    assert keeper.round().results == 1  # after its 90 days, as any result
    results.close()


def test_a_study_received_while_the_clock_is_behind_keeps_its_images_once_it_is_set_right(
    tmp_path: Path, audit: AuditLog
) -> None:
    """As for results: a study's images, received and sent while the clock was a year behind,
    keep their 30 days once the clock is put right, instead of going at the next round."""
    box = _Box()
    config = Config(state_dir=tmp_path, studies_retention_days=30)
    store = StudyStore(tmp_path / "dicom", clock=box.stamp(tmp_path))
    keeper = box.keeper(config, audit, None, store)
    keeper.round()
    box.run(3600, clock_set=-365 * DAY)
    study = _study(store, StudyState.DONE)
    received = store.study(study)
    assert received is not None and received.last_at == pytest.approx(box.wall + 365 * DAY)
    box.run(DAY, clock_set=365 * DAY)
    assert keeper.round().studies == 0
    assert store.study(study) is not None and all(p.exists() for p in store.instance_files(study))
    box.run(31 * DAY)
    assert keeper.round().studies == 1  # after its 30 days, as any study
    store.close()


def test_the_box_stamps_studies_by_the_retention_floor(tmp_path: Path) -> None:
    store = StudyStore.open(Config(state_dir=tmp_path))
    try:
        assert isinstance(store.clock, StampClock)
        assert store.clock.path == tmp_path / "retention.json"
    finally:
        store.close()


def test_the_stamp_is_never_ahead_of_a_clock_that_is_right(tmp_path: Path) -> None:
    box = _Box()
    stamp = StampClock(tmp_path / "retention.json", lambda: box.wall, lambda: box.up,
                       lambda: box.boot, reload_s=0.0)  # fmt: skip
    assert stamp() == box.wall  # no retention state yet: the clock
    box.clock(tmp_path).now()
    box.run(3 * DAY)
    assert stamp() == box.wall
    box.reboot(off_for=10 * DAY)  # saved in another boot: counts from now, not from then
    assert stamp() == box.wall
    box.run(DAY, clock_set=-30 * DAY)
    assert box.wall < stamp() <= box.wall + 30 * DAY
