"""Group commit of the audit log (ADR 0009): many threads, one fsync per batch; a batch cut short
by a crash is recognised by its batch MACs and kept; anything else after the head stays an error."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appliance.audit import AuditEvent, AuditLog, Outcome, Severity, TpmCheckpointAnchor, verify
from appliance.audit.group import GroupAuditor
from appliance.audit.log import AuditDraft
from appliance.audit.records import _without, parse_record, record_hash
from appliance.errors import StorageError
from appliance.trust.swtpm import Swtpm

THREADS = 16

# 16 threads append through one GroupAuditor forever, printing each seq once append() returned.
GROUP_APPENDER = """
import sys, threading
from pathlib import Path
from appliance.audit import AuditEvent, AuditLog, Outcome, TpmCheckpointAnchor
from appliance.audit.group import GroupAuditor
directory, key, tcti = sys.argv[1:4]
log = AuditLog(Path(directory), bytes.fromhex(key), TpmCheckpointAnchor(tcti, 0x01500021),
               checkpoint_every=25, max_file_bytes=20000)
group = GroupAuditor(log)
out = threading.Lock()
def work(i):
    n = 0
    while True:
        rec = group.append(AuditEvent.INFERENCE, actor=f"t{i}", outcome=Outcome.SUCCESS,
                           detail={"n": n})
        with out:
            print(rec.seq, flush=True)
        n += 1
for i in range(16):
    threading.Thread(target=work, args=(i,), daemon=True).start()
threading.Event().wait()
"""


def _drafts(log: AuditLog, n: int, actor: str = "batch") -> list[AuditDraft]:
    return [log.draft(AuditEvent.PHI_READ, actor=actor, outcome=Outcome.SUCCESS, subject=f"s{i}")
            for i in range(n)]  # fmt: skip


def _log_and_first_head(
    directory: Path, key: bytes, anchor: TpmCheckpointAnchor
) -> tuple[AuditLog, bytes]:
    """A new log with one record, and its head.json as it is then (an attacker's old copy)."""
    log = AuditLog(directory, key, anchor)
    log.append(AuditEvent.LOGIN, actor="a", outcome=Outcome.SUCCESS)
    return log, (directory / "head.json").read_bytes()


def test_sixteen_threads_share_fsyncs_and_make_one_gapless_verified_chain(
    tmp_path: Path, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    log = AuditLog(tmp_path / "audit", key, anchor, checkpoint_every=20, max_file_bytes=6000)
    group = GroupAuditor(log)
    acked: dict[int, list[int]] = {i: [] for i in range(THREADS)}

    def work(i: int) -> None:
        for n in range(25):
            rec = group.append(AuditEvent.LOGIN, actor=f"t{i}", outcome=Outcome.SUCCESS,
                               detail={"n": n})  # fmt: skip
            acked[i].append(rec.seq)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    group.close()
    records = list(log.records())
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    for i, seqs in acked.items():
        mine = [r for r in records if r.actor == f"t{i}"]
        assert [r.seq for r in mine] == seqs and [r.detail["n"] for r in mine] == list(range(25))
    assert len(list((tmp_path / "audit").glob("audit-*.log"))) >= 3  # batches met rotation
    assert group.committer.items == THREADS * 25
    assert group.committer.batches < group.committer.items  # fsyncs were shared
    assert verify(tmp_path / "audit", key, anchor).problems == []


def test_batch_cut_short_by_a_crash_is_a_warning_and_the_next_append_keeps_it(
    tmp_path: Path, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    directory = tmp_path / "audit"
    log, head = _log_and_first_head(directory, key, anchor)
    batch = log.append_many(_drafts(log, 5))
    # The crash: the batch's lines reached the disk, its head did not; then a power cut tore
    # the start of a next write.
    (directory / "head.json").write_bytes(head)
    with (directory / "audit-000001.log").open("ab") as fh:
        fh.write(b'{"actor":"a","anch')
    report = verify(directory, key, anchor)
    assert report.ok, report.problems
    assert [p.severity for p in report.problems] == [Severity.WARNING] * 2
    assert "records 2 to 6 were written by one group commit" in report.problems[0].what
    assert [r.seq for r in log.records()] == [1]
    nxt = log.append(AuditEvent.LOGOUT, actor="a", outcome=Outcome.SUCCESS)
    assert nxt.seq == 7 and nxt.prev == batch[-1].hash  # the batch kept, the torn bytes cut
    assert [r.seq for r in log.records()] == list(range(1, 8))
    assert verify(directory, key, anchor).problems == []


def test_head_restored_two_batches_old_is_detected(
    tmp_path: Path, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    directory = tmp_path / "audit"
    log, head = _log_and_first_head(directory, key, anchor)
    log.append_many(_drafts(log, 3))
    log.append_many(_drafts(log, 3))
    (directory / "head.json").write_bytes(head)
    report = verify(directory, key, anchor)
    errors = [p.what for p in report.problems if p.severity is Severity.ERROR]
    assert len(errors) == 1 and "an older head.json was restored" in errors[0]
    with pytest.raises(StorageError, match="more than one unacknowledged line"):
        log.append(AuditEvent.LOGIN, actor="z", outcome=Outcome.SUCCESS)


def _unacknowledged_batch(
    directory: Path, key: bytes, anchor: TpmCheckpointAnchor
) -> tuple[AuditLog, Path, list[bytes]]:
    """A log whose last batch of 3 reached the disk but not the head (a crash in between):
    the log, its file and the file's lines."""
    log, head = _log_and_first_head(directory, key, anchor)
    log.append_many(_drafts(log, 3))
    (directory / "head.json").write_bytes(head)
    path = directory / "audit-000001.log"
    return log, path, path.read_bytes().splitlines(keepends=True)


def test_batch_tail_edited_without_the_key_is_detected_and_not_kept(
    tmp_path: Path, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    directory = tmp_path / "audit"
    log, path, lines = _unacknowledged_batch(directory, key, anchor)
    # The attacker renames the actor of the last tail record and recomputes nothing it cannot:
    # the batch MAC over the new hash needs the key.
    rec = parse_record(lines[-1])
    moved = dataclasses.replace(rec, actor="someone-else")
    moved = dataclasses.replace(moved, hash=record_hash(rec.prev, _without(moved, "hash", "mac")))
    path.write_bytes(b"".join(lines[:-1]) + moved.to_line())
    report = verify(directory, key, anchor)
    assert not report.ok
    with pytest.raises(StorageError, match="more than one unacknowledged line"):
        log.append(AuditEvent.LOGIN, actor="z", outcome=Outcome.SUCCESS)


def test_kill_9_during_group_commits_loses_no_acknowledged_record(
    tmp_path: Path, key: bytes, swtpm: Swtpm, anchor: TpmCheckpointAnchor
) -> None:
    directory = tmp_path / "audit"
    acknowledged: set[int] = set()
    for round_, delay in enumerate((0.0, 0.003, 0.011, 0.02, 0.037)):
        proc = subprocess.Popen(
            [sys.executable, "-c", GROUP_APPENDER, str(directory), key.hex(), swtpm.tcti],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        seen = {int(proc.stdout.readline()) for _ in range(40 + 10 * round_)}
        time.sleep(delay)
        proc.kill()
        seen |= {int(line) for line in proc.stdout.read().split()}
        proc.wait()
        acknowledged |= seen
        log = AuditLog(directory, key, anchor)
        report = verify(directory, key, anchor)
        assert report.ok, report.problems  # at most warnings: a batch or a line after the head
        log.append(AuditEvent.LOGIN, actor="after", outcome=Outcome.SUCCESS)  # repairs the tail
        stored = {r.seq for r in log.records()}
        assert acknowledged <= stored, f"lost acknowledged records {acknowledged - stored}"
    AuditLog(directory, key, anchor).checkpoint()  # confirms a checkpoint a kill left unanchored
    assert verify(directory, key, anchor).problems == []


@pytest.mark.parametrize("edit", ["field", "duplicate-key"])
def test_batch_tail_edited_keeping_its_hash_and_mac_is_not_kept(
    tmp_path: Path, key: bytes, anchor: TpmCheckpointAnchor, edit: str
) -> None:
    """A crash batch is kept only if each record is intact: its batch MAC signs the hash, and the
    hash must still match the content (and the line be the canonical one)."""
    directory = tmp_path / "audit"
    log, path, lines = _unacknowledged_batch(directory, key, anchor)
    if edit == "field":  # the stored hash and batch MAC kept as they were
        lines[-1] = dataclasses.replace(parse_record(lines[-1]), actor="someone-else").to_line()
    else:  # readers that take a repeated key's first value see another actor
        lines[-1] = b'{"actor":"someone-else",' + lines[-1][1:]
    path.write_bytes(b"".join(lines))
    assert not verify(directory, key, anchor).ok
    with pytest.raises(StorageError, match="more than one unacknowledged line"):
        log.append(AuditEvent.LOGIN, actor="z", outcome=Outcome.SUCCESS)
