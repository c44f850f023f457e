"""The audit log on disk with a real swtpm anchor: durability, concurrency, crashes, rotation,
checkpoints and retention."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance.audit import (
    AuditEvent,
    AuditLog,
    Outcome,
    Severity,
    TpmCheckpointAnchor,
    hash_subject,
    verify,
)
from appliance.audit.records import batch_mac, make_record, parse_head
from appliance.errors import StorageError, TpmUnavailableError
from appliance.trust.swtpm import Swtpm

INDEX = 0x01500021
STUDY_UID = "1.2.826.0.1.3680043.8.498.12345678901234567890"
NOTE_ID = "MRN-00417-note-Doe-Jane"

# Appends forever (or argv[5] times), printing each seq once append() has returned.
APPENDER = """
import sys
import time
from pathlib import Path
from appliance.audit import AuditEvent, AuditLog, Outcome, TpmCheckpointAnchor
directory, key, tcti, actor, count = sys.argv[1:6]
log = AuditLog(Path(directory), bytes.fromhex(key), TpmCheckpointAnchor(tcti, 0x01500021),
               checkpoint_every=5, max_file_bytes=3000)
n = 0
while int(count) < 0 or n < int(count):
    rec = log.append(AuditEvent.INFERENCE, actor=actor, outcome=Outcome.SUCCESS,
                     subject=f"study-{n}", model="cxr-2.1", detail={"n": n})
    print(rec.seq, flush=True)
    n += 1
"""


def _appender(
    directory: Path, key: bytes, swtpm: Swtpm, actor: str, count: int
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(directory), key.hex(), swtpm.tcti, actor, str(count)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _all_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file())


def test_appended_records_read_back_in_order(
    tmp_path: Path, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    log = AuditLog(tmp_path / "audit", key, anchor)
    first = log.append(AuditEvent.LOGIN, actor="alice", outcome=Outcome.SUCCESS, role="radiologist")
    second = log.append(
        AuditEvent.INFERENCE, actor="alice", outcome=Outcome.SUCCESS, role="radiologist",
        subject=STUDY_UID, model="cxr-2.1", detail={"device": "npu", "ms": 41, "cached": False},
    )  # fmt: skip
    denied = log.append(
        AuditEvent.PERMISSION_DENIED, actor="bob", outcome=Outcome.DENIED, flagged=True
    )
    assert [r.seq for r in (first, second, denied)] == [1, 2, 3]
    assert second.prev == first.hash and denied.prev == second.hash
    assert list(log.records()) == [first, second, denied]
    assert second.subject == hash_subject(key, STUDY_UID)
    assert dict(second.detail) == {"device": "npu", "ms": 41, "cached": False}
    assert second.time.endswith("Z") and len(second.time) == len("2024-01-01T00:00:00.000Z")
    report = verify(tmp_path / "audit", key, anchor)
    assert report.ok and report.problems == [] and report.records == 3


def test_raw_study_or_note_identifier_never_reaches_disk_or_python_logs(
    tmp_path: Path, key: bytes, anchor: TpmCheckpointAnchor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    directory = tmp_path / "audit"
    log = AuditLog(directory, key, anchor, checkpoint_every=2, max_file_bytes=600)
    for identifier in (STUDY_UID, NOTE_ID):
        log.append(
            AuditEvent.PHI_READ, actor="carol", outcome=Outcome.SUCCESS, subject=identifier,
            detail={"secret-detail": "detail-value-77"},
        )  # fmt: skip
    log.checkpoint()
    head = parse_head((directory / "head.json").read_bytes(), key)
    with (directory / head.file).open("ab") as fh:  # a torn line, so that a repair is logged
        fh.write(b'{"partial')
    log.append(AuditEvent.LOGOUT, actor="carol", outcome=Outcome.SUCCESS, subject=NOTE_ID)
    assert "unacknowledged" in caplog.text
    on_disk = _all_bytes(directory)
    for raw in (STUDY_UID, NOTE_ID):
        assert raw.encode() not in on_disk
        assert hash_subject(key, raw).encode() in on_disk  # findable by the clinic with the key
    logged = caplog.text
    assert STUDY_UID not in logged and NOTE_ID not in logged and "detail-value-77" not in logged


def test_records_are_durable_across_reopen(
    tmp_path: Path, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    directory = tmp_path / "audit"
    written = [
        AuditLog(directory, key, anchor).append(
            AuditEvent.LOGIN, actor=f"u{i}", outcome=Outcome.SUCCESS
        )
        for i in range(3)
    ]  # a fresh AuditLog each time: nothing is kept in memory
    reopened = AuditLog(directory, key, anchor)
    more = reopened.append(AuditEvent.LOGOUT, actor="u0", outcome=Outcome.SUCCESS)
    assert more.seq == 4 and more.prev == written[-1].hash
    assert list(reopened.records()) == [*written, more]
    assert verify(directory, key, anchor).ok


def test_two_processes_appending_make_one_gapless_chain(
    tmp_path: Path, key: bytes, swtpm: Swtpm, anchor: TpmCheckpointAnchor
) -> None:
    directory = tmp_path / "audit"
    procs = [_appender(directory, key, swtpm, actor, 50) for actor in ("proc-a", "proc-b")]
    acks = {}
    for proc, actor in zip(procs, ("proc-a", "proc-b"), strict=True):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        acks[actor] = [int(line) for line in out.split()]
    records = list(AuditLog(directory, key, anchor).records())
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    for actor, seqs in acks.items():
        mine = [r for r in records if r.actor == actor]
        assert [r.seq for r in mine] == seqs and len(seqs) == 50
        assert [r.detail["n"] for r in mine] == list(range(50))
    checkpoints = [r for r in records if r.event is AuditEvent.CHECKPOINT]
    assert [r.anchor for r in checkpoints] == list(range(1, len(checkpoints) + 1))
    assert anchor.read() == len(checkpoints) >= 100 // 5
    report = verify(directory, key, anchor)
    assert report.ok and report.problems == [], report.problems


def _kill_after(directory: Path, key: bytes, swtpm: Swtpm, acks: int, delay: float) -> list[int]:
    """Run an endless appender, kill -9 it ``delay`` s after its ``acks``-th acknowledged record
    (so the kill lands anywhere in the next append); return every seq it acknowledged."""
    proc = _appender(directory, key, swtpm, "killed", -1)
    assert proc.stdout is not None
    seen = [int(proc.stdout.readline()) for _ in range(acks)]
    time.sleep(delay)
    proc.kill()
    seen += [int(line) for line in proc.stdout.read().split()]  # acked before the kill landed
    proc.wait()
    return seen


def test_kill_9_during_writes_loses_no_acknowledged_record(
    tmp_path: Path, key: bytes, swtpm: Swtpm, anchor: TpmCheckpointAnchor
) -> None:
    directory = tmp_path / "audit"
    acknowledged: list[int] = []
    # Without a delay the kill always lands before the next write; the delays spread it over
    # the write, the fsyncs, the head update and the checkpoint's TPM advance.
    for n, delay in zip(
        (1, 4, 9, 17, 30, 2, 5, 7, 3, 11), (0, 0.001, 0.002, 0.003, 0.004) * 2, strict=True
    ):
        acknowledged += _kill_after(directory, key, swtpm, n, delay)
        stored = {r.seq for r in AuditLog(directory, key, anchor).records()}
        assert set(acknowledged) <= stored, "an acknowledged record was lost"
        report = verify(directory, key, anchor)
        assert report.ok, report.problems  # at most a warning for the unacknowledged tail
    log = AuditLog(directory, key, anchor)
    log.append(AuditEvent.LOGIN, actor="after", outcome=Outcome.SUCCESS)
    log.checkpoint()
    assert verify(directory, key, anchor).problems == []


def test_torn_unacknowledged_line_is_a_warning_and_the_next_append_removes_it(
    tmp_path: Path, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    directory = tmp_path / "audit"
    log = AuditLog(directory, key, anchor)
    kept = [log.append(AuditEvent.LOGIN, actor="a", outcome=Outcome.SUCCESS) for _ in range(3)]
    with (directory / "audit-000001.log").open("ab") as fh:  # a power cut mid-write
        fh.write(b'{"actor":"a","anchor":null,"det')
    report = verify(directory, key, anchor)
    assert report.ok
    [warning] = report.problems
    assert warning.severity is Severity.WARNING and warning.line == 4
    assert "incomplete record at the end of the log" in warning.what
    assert list(log.records()) == kept
    nxt = log.append(AuditEvent.LOGOUT, actor="a", outcome=Outcome.SUCCESS)
    assert nxt.seq == 4 and nxt.prev == kept[-1].hash
    assert verify(directory, key, anchor).problems == []


def test_record_written_but_not_acknowledged_is_a_warning_and_then_removed(
    tmp_path: Path, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    directory = tmp_path / "audit"
    log = AuditLog(directory, key, anchor, max_file_bytes=400)
    last = log.append(AuditEvent.LOGIN, actor="a", outcome=Outcome.SUCCESS)
    log.checkpoint()
    head = parse_head((directory / "head.json").read_bytes(), key)
    # The crash: the record reached the next file, the head update did not happen.
    orphan = make_record(
        seq=head.seq + 1, time=last.time, event=AuditEvent.LOGOUT, outcome=Outcome.SUCCESS,
        actor="a", prev=head.hash,
    )  # fmt: skip
    (directory / "audit-000002.log").write_bytes(orphan.to_line())
    report = verify(directory, key, anchor)
    assert report.ok
    assert [p.severity for p in report.problems] == [Severity.WARNING]
    assert "never acknowledged" in report.problems[0].what
    assert orphan not in list(log.records())
    nxt = log.append(AuditEvent.EXPORT, actor="a", outcome=Outcome.SUCCESS)
    assert nxt.seq == orphan.seq and nxt.event is AuditEvent.EXPORT
    assert verify(directory, key, anchor).problems == []


def test_rotation_keeps_the_chain_across_files(
    tmp_path: Path, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    directory = tmp_path / "audit"
    log = AuditLog(directory, key, anchor, checkpoint_every=1000, max_file_bytes=1500)
    for i in range(40):
        log.append(AuditEvent.PHI_READ, actor="d", outcome=Outcome.SUCCESS, subject=f"s{i}")
    files = sorted(p.name for p in directory.glob("audit-*.log"))
    assert len(files) >= 4
    records = list(log.records())
    for name in files[:-1]:
        last = json.loads((directory / name).read_bytes().splitlines()[-1])
        assert last["event"] == "checkpoint", f"{name} does not end with a checkpoint"
        following = json.loads(
            (directory / files[files.index(name) + 1]).read_bytes().splitlines()[0]
        )
        assert following["prev"] == last["hash"] and following["seq"] == last["seq"] + 1
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert verify(directory, key, anchor).problems == []


def test_a_checkpoint_follows_every_n_records_and_advances_the_tpm(
    tmp_path: Path, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    log = AuditLog(tmp_path / "audit", key, anchor, checkpoint_every=5)
    for _ in range(17):
        log.append(AuditEvent.LOGIN, actor="e", outcome=Outcome.SUCCESS)
    records = list(log.records())
    checkpoints = [r for r in records if r.event is AuditEvent.CHECKPOINT]
    assert [r.seq for r in checkpoints] == [6, 12, 18]
    assert [r.anchor for r in checkpoints] == [1, 2, 3] and anchor.read() == 3
    # Checkpoints carry the checkpoint MAC, every other record its (single-record) batch MAC.
    assert all(r.mac for r in checkpoints)
    assert all(r.mac == batch_mac(key, r.hash, r.seq) for r in records if r not in checkpoints)
    shutdown = log.checkpoint()
    assert shutdown.anchor == 4 and anchor.read() == 4
    assert verify(tmp_path / "audit", key, anchor).checkpoints == 4


class _CrashBeforeAdvance(TpmCheckpointAnchor):
    """The real TPM anchor, except that the first advance never reaches the TPM (a crash)."""

    crashed = False

    def advance(self) -> int:
        if not self.crashed:
            self.crashed = True
            raise TpmUnavailableError("power cut")
        return super().advance()


def test_crash_between_checkpoint_and_tpm_advance_is_a_warning_not_a_rollback(
    tmp_path: Path, key: bytes, swtpm: Swtpm, anchor: TpmCheckpointAnchor
) -> None:
    directory = tmp_path / "audit"
    log = AuditLog(directory, key, _CrashBeforeAdvance(swtpm.tcti, INDEX))
    log.append(AuditEvent.LOGIN, actor="f", outcome=Outcome.SUCCESS)
    with pytest.raises(TpmUnavailableError):
        log.checkpoint()
    report = verify(directory, key, anchor)
    assert report.ok and [p.severity for p in report.problems] == [Severity.WARNING]
    assert "carries anchor 1 but the TPM counter is 0" in report.problems[0].what
    assert log.checkpoint().anchor == 1 and anchor.read() == 1
    assert verify(directory, key, anchor).problems == []


def test_retention_prune_deletes_old_files_and_keeps_the_chain_verifiable(
    tmp_path: Path, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    now = [datetime(2020, 1, 1, tzinfo=UTC)]
    directory = tmp_path / "audit"
    log = AuditLog(
        directory, key, anchor, max_file_bytes=1200, retention_days=20, clock=lambda: now[0]
    )
    for day in range(30):
        now[0] = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=day)
        log.append(AuditEvent.LOGIN, actor="g", outcome=Outcome.SUCCESS, detail={"day": day})
    before = sorted(directory.glob("audit-*.log"))
    now[0] = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=40)
    deleted = log.prune()
    after = sorted(directory.glob("audit-*.log"))
    assert deleted > 0 and len(after) < len(before)
    assert after[0] == before[deleted]  # whole files, oldest first
    cutoff = now[0] - timedelta(days=20)
    records = list(log.records())
    assert records[0].seq > 1
    newest_kept = json.loads(after[0].read_bytes().splitlines()[-1])["time"]
    assert newest_kept >= cutoff.strftime("%Y-%m-%dT%H:%M:%S.000Z")  # straddling file kept
    assert records[0].when < cutoff  # so some old records remain: only whole files go
    prunes = [r for r in records if r.event is AuditEvent.RETENTION_PRUNE]
    assert len(prunes) == deleted
    assert prunes[-1].detail["last_deleted_seq"] == records[0].seq - 1
    assert prunes[-1].detail["last_deleted_hash"] == records[0].prev
    report = verify(directory, key, anchor)
    assert report.ok and report.problems == [], report.problems
    assert log.prune() == 0


def test_append_refuses_when_the_head_was_deleted(
    tmp_path: Path, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    directory = tmp_path / "audit"
    log = AuditLog(directory, key, anchor)
    log.append(AuditEvent.LOGIN, actor="h", outcome=Outcome.SUCCESS)
    (directory / "head.json").unlink()
    with pytest.raises(StorageError, match="appliance audit verify"):
        log.append(AuditEvent.LOGIN, actor="h", outcome=Outcome.SUCCESS)


def test_unwritable_audit_folder_says_what_to_do(tmp_path: Path, key: bytes) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(StorageError, match="mounted read-write"):
        AuditLog(blocker / "audit", key, None)


def test_records_can_be_read_for_a_date_range(
    tmp_path: Path, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    now = [datetime(2024, 5, 1, 12, tzinfo=UTC)]
    log = AuditLog(tmp_path / "audit", key, anchor, clock=lambda: now[0])
    for hour in range(6):
        now[0] = datetime(2024, 5, 1, 12 + hour, tzinfo=UTC)
        log.append(AuditEvent.LOGIN, actor="i", outcome=Outcome.SUCCESS, detail={"hour": hour})
    got = log.records(datetime(2024, 5, 1, 14, tzinfo=UTC), datetime(2024, 5, 1, 16, tzinfo=UTC))
    assert [r.detail["hour"] for r in got] == [2, 3]


def test_values_that_cannot_be_stored_are_refused_before_writing(
    tmp_path: Path, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    log = AuditLog(tmp_path / "audit", key, anchor)
    with pytest.raises(ValueError, match="detail"):
        log.append(AuditEvent.LOGIN, actor="j", outcome=Outcome.SUCCESS, detail={"x": 1.5})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="actor"):
        log.append(AuditEvent.LOGIN, actor="", outcome=Outcome.SUCCESS)
    with pytest.raises(ValueError, match="checkpoint"):
        log.append(AuditEvent.CHECKPOINT, actor="j", outcome=Outcome.SUCCESS)
    assert list(log.records()) == []
    assert verify(tmp_path / "audit", key, anchor).problems == []
