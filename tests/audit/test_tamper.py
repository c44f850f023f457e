"""An attacker with root but without the audit key edits the log on disk; verify must say where.

Each test builds a real log (rotated files, checkpoints anchored in a real swtpm counter), tampers
with the files the way an attacker would, and checks the verdict and the exact finding.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from appliance.audit import (
    AuditEvent,
    AuditLog,
    AuditRecord,
    Outcome,
    Severity,
    TpmCheckpointAnchor,
    VerifyReport,
    record_hash,
    verify,
)
from appliance.audit.records import make_record, parse_head, parse_record, sign_head
from appliance.errors import StorageError
from tests.conftest import running_swtpm

INDEX = 0x01500021
EVERY = 10  # with 8200-byte files: file 1 holds 1..20, checkpoints at 11 and 20
RECORDS = 60
BAD_MAC = "log rewritten or signed with another key"


def _build(directory: Path, key: bytes, anchor: TpmCheckpointAnchor | None) -> AuditLog:
    log = AuditLog(directory, key, anchor, checkpoint_every=EVERY, max_file_bytes=8200)
    for i in range(RECORDS):
        log.append(
            AuditEvent.INFERENCE, actor=f"user-{i % 3}", outcome=Outcome.SUCCESS,
            subject=f"study-{i}", model="cxr-2.1", detail={"n": i},
        )  # fmt: skip
    return log


@pytest.fixture
def log(tmp_path: Path, key: bytes, anchor: TpmCheckpointAnchor) -> AuditLog:
    built = _build(tmp_path / "audit", key, anchor)
    assert len(_files(built.directory)) >= 3
    assert verify(built.directory, key, anchor).problems == []
    return built


def _files(directory: Path) -> list[Path]:
    return sorted(directory.glob("audit-*.log"))


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _where(directory: Path, seq: int) -> tuple[Path, int]:
    """The file holding record ``seq`` and its index in that file's lines."""
    for path in _files(directory):
        for i, raw in enumerate(_lines(path)):
            if parse_record(raw).seq == seq:
                return path, i
    raise AssertionError(f"record {seq} not found")


def _rechain(records: list[AuditRecord], prev: str, seq: int) -> list[AuditRecord]:
    """What an attacker without the key can do: renumber and recompute every SHA-256 link.

    Checkpoint MACs cannot be recomputed, so they are kept as they were.
    """
    out = []
    for original in records:
        moved = dataclasses.replace(original, seq=seq, prev=prev)
        body = {k: v for k, v in moved.to_dict().items() if k not in ("hash", "mac")}
        out.append(dataclasses.replace(moved, hash=record_hash(prev, body)))
        prev, seq = out[-1].hash, seq + 1
    return out


def _errors(report: VerifyReport) -> list[str]:
    assert not report.ok
    return [p.what for p in report.problems if p.severity is Severity.ERROR]


def _is_checkpoint(directory: Path, seq: int) -> bool:
    path, i = _where(directory, seq)
    return parse_record(_lines(path)[i]).event is AuditEvent.CHECKPOINT


def test_edited_byte_in_a_record_is_detected(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    path, i = _where(log.directory, 17)
    lines = _lines(path)
    at = lines[i].index(b'"actor":"user-') + len(b'"actor":"user-')
    lines[i] = lines[i][:at] + bytes([lines[i][at] ^ 0x01]) + lines[i][at + 1 :]
    path.write_bytes(b"".join(lines))
    report = verify(log.directory, key, anchor)
    assert _errors(report) == ["record 17 was modified (its hash does not match its content)"]
    assert report.problems[0].seq == 17 and report.problems[0].file == path.name


def test_edited_byte_that_breaks_the_json_is_detected(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    path, i = _where(log.directory, 17)
    lines = _lines(path)
    lines[i] = b"[" + lines[i][1:]
    path.write_bytes(b"".join(lines))
    errors = _errors(verify(log.directory, key, anchor))
    assert f"line {i + 1} of {path.name} is not a record (not valid JSON)" in errors
    assert "record 17 is missing (seq jumps from 16 to 18)" in errors


def test_deleted_record_is_detected(log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor) -> None:
    path, i = _where(log.directory, 18)
    lines = _lines(path)
    del lines[i]
    path.write_bytes(b"".join(lines))
    report = verify(log.directory, key, anchor)
    assert _errors(report) == ["record 18 is missing (seq jumps from 17 to 19)"]
    assert report.problems[0].seq == 19


def test_swapped_records_are_detected(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    path, i = _where(log.directory, 18)
    lines = _lines(path)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    path.write_bytes(b"".join(lines))
    assert _errors(verify(log.directory, key, anchor)) == [
        "records out of order: seq 18 follows 19"
    ]


def test_truncated_log_is_detected_by_the_signed_head(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    last = _files(log.directory)[-1]
    lines = _lines(last)
    newest = parse_record(lines[-1]).seq
    last.write_bytes(b"".join(lines[:-3]))
    errors = _errors(verify(log.directory, key, anchor))
    said = f"the log ends at record {newest - 3} but the head says {newest}"
    assert errors == [f"{said}: records were truncated"]
    with pytest.raises(StorageError, match="shorter than its signed head"):
        log.append(AuditEvent.LOGIN, actor="x", outcome=Outcome.SUCCESS)


def _snapshot(directory: Path) -> tuple[bytes, dict[str, int]]:
    return (directory / "head.json").read_bytes(), {
        p.name: p.stat().st_size for p in _files(directory)
    }


def _roll_back(directory: Path, snapshot: tuple[bytes, dict[str, int]]) -> None:
    """Truncate every file to its old size, delete newer files, restore the old head."""
    head, sizes = snapshot
    for path in _files(directory):
        if path.name not in sizes:
            path.unlink()
        else:
            os.truncate(path, sizes[path.name])
    (directory / "head.json").write_bytes(head)


def test_truncation_with_an_older_head_is_caught_by_the_tpm_anchor(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    old = _snapshot(log.directory)
    before = anchor.read()
    for _ in range(EVERY + 1):  # crosses at least one checkpoint
        log.append(AuditEvent.PHI_READ, actor="y", outcome=Outcome.SUCCESS, subject="later")
    assert anchor.read() == before + 1
    _roll_back(log.directory, old)
    said = f"the newest checkpoint carries anchor {before} but the TPM counter is {before + 1}"
    assert _errors(verify(log.directory, key, anchor)) == [f"{said}: the log was rolled back"]


def test_rollback_since_the_last_checkpoint_is_the_documented_blind_spot(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    head = parse_head((log.directory / "head.json").read_bytes(), key)
    old = _snapshot(log.directory)
    for _ in range(EVERY - (head.seq - head.checkpoint)):  # stays short of the next checkpoint
        log.append(AuditEvent.LOGIN, actor="z", outcome=Outcome.SUCCESS)
    _roll_back(log.directory, old)
    # Not detectable without a newer anchored checkpoint: see the threat model in log.py.
    assert verify(log.directory, key, anchor).ok
    log.checkpoint()
    _roll_back(log.directory, old)
    assert not verify(log.directory, key, anchor).ok  # once a checkpoint was made, it is caught


def test_older_head_restored_without_truncating_is_detected(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    head = (log.directory / "head.json").read_bytes()
    for _ in range(2):
        log.append(AuditEvent.LOGIN, actor="z", outcome=Outcome.SUCCESS)
    (log.directory / "head.json").write_bytes(head)
    errors = _errors(verify(log.directory, key, anchor))
    assert len(errors) == 1 and "follow the head: an older head.json was restored" in errors[0]
    with pytest.raises(StorageError, match="more than one unacknowledged line"):
        log.append(AuditEvent.LOGIN, actor="z", outcome=Outcome.SUCCESS)


def test_older_head_written_in_place_with_its_times_set_back_is_detected(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    """An append takes the head it wrote itself without reading head.json back while head.json
    is that very file (log.py). An attacker who writes an older head into the same inode, with
    the same size, and sets its times back as they were still changes its change time: the
    append reads the file and refuses."""
    path = log.directory / "head.json"
    older = path.read_bytes()
    for _ in range(2):
        log.append(AuditEvent.LOGIN, actor="z", outcome=Outcome.SUCCESS)
    newer = path.stat()
    assert len(older) == newer.st_size  # same length: only the times could tell
    with path.open("r+b") as fh:  # the same inode, rewritten
        fh.write(older)
    os.utime(path, ns=(newer.st_atime_ns, newer.st_mtime_ns))
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (newer.st_ino, newer.st_mtime_ns)
    with pytest.raises(StorageError, match="more than one unacknowledged line"):
        log.append(AuditEvent.LOGIN, actor="z", outcome=Outcome.SUCCESS)


def test_file_from_another_log_with_another_key_is_detected(
    tmp_path: Path, log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    other = _build(tmp_path / "other", os.urandom(32), None)
    victim = _files(log.directory)[1]
    shutil.copyfile(other.directory / victim.name, victim)
    errors = _errors(verify(log.directory, key, anchor))
    assert any(f"has a bad signature ({BAD_MAC})" in e for e in errors)
    assert any("does not chain to record" in e for e in errors)


def test_middle_file_forged_and_rechained_without_the_key_fails_its_checkpoint(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    victim = _files(log.directory)[1]
    records = [parse_record(raw) for raw in _lines(victim)]
    records[0] = dataclasses.replace(records[0], actor="mallory", detail={"n": -1})
    forged = _rechain(records, records[0].prev, records[0].seq)
    victim.write_bytes(b"".join(r.to_line() for r in forged))
    last = forged[-1]
    assert last.event is AuditEvent.CHECKPOINT  # rotation seals every full file
    errors = _errors(verify(log.directory, key, anchor))
    assert f"checkpoint at record {last.seq} has a bad signature ({BAD_MAC})" in errors
    assert any(f"does not chain to record {last.seq}" in e for e in errors)


def test_naively_inserted_record_is_detected(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    path, i = _where(log.directory, 17)
    lines = _lines(path)
    seventeen = parse_record(lines[i])
    forged = make_record(
        seq=18, time=seventeen.time, event=AuditEvent.LOGIN, outcome=Outcome.SUCCESS,
        actor="mallory", prev=seventeen.hash,
    )  # fmt: skip
    lines.insert(i + 1, forged.to_line())
    path.write_bytes(b"".join(lines))
    errors = _errors(verify(log.directory, key, anchor))
    assert "record 18 appears twice (a copy was inserted or replayed)" in errors


def test_inserted_record_with_the_rest_of_the_log_rechained_is_detected(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    files = _files(log.directory)
    records = [(p, parse_record(raw)) for p in files for raw in _lines(p)]
    at = next(i for i, (_, r) in enumerate(records) if r.seq == 17)
    forged = dataclasses.replace(records[at][1], actor="mallory")
    records.insert(at + 1, (records[at][0], forged))
    chained = _rechain([r for _, r in records[at + 1 :]], records[at][1].hash, 18)
    final = records[: at + 1] + [
        (p, r) for (p, _), r in zip(records[at + 1 :], chained, strict=True)
    ]
    for path in files:
        path.write_bytes(b"".join(r.to_line() for p, r in final if p == path))
    errors = _errors(verify(log.directory, key, anchor))
    next_checkpoint = next(r.seq for r in chained if r.event is AuditEvent.CHECKPOINT)
    assert f"checkpoint at record {next_checkpoint} has a bad signature ({BAD_MAC})" in errors
    assert any("is not the one the head signed" in e for e in errors)


def test_deleted_middle_file_is_detected(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    first, middle, third = _files(log.directory)[:3]
    gone = [parse_record(raw).seq for raw in _lines(middle)]
    middle.unlink()
    errors = _errors(verify(log.directory, key, anchor))
    jump = f"the files jump from {first.name} to {third.name}"
    assert f"file {middle.name} is missing ({jump})" in errors
    jumps = f"seq jumps from {gone[0] - 1} to {gone[-1] + 1}"
    assert f"records {gone[0]} to {gone[-1]} are missing ({jumps})" in errors


def test_oldest_file_deleted_without_a_retention_record_is_detected(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    oldest = _files(log.directory)[0]
    last = parse_record(_lines(oldest)[-1]).seq
    oldest.unlink()
    errors = _errors(verify(log.directory, key, anchor))
    gone = f"records 1 to {last} are missing and no retention-prune record accounts for them"
    assert errors == [f"the log starts at record {last + 1}: {gone}"]


def test_deleted_head_is_detected(log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor) -> None:
    (log.directory / "head.json").unlink()
    errors = _errors(verify(log.directory, key, anchor))
    assert errors == ["head.json is missing: the newest records cannot be authenticated"]


def test_head_signed_with_another_key_is_detected(
    tmp_path: Path, log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    other = _build(tmp_path / "other", os.urandom(32), None)
    shutil.copyfile(other.directory / "head.json", log.directory / "head.json")
    errors = _errors(verify(log.directory, key, anchor))
    assert "head.json is not valid: bad signature (rewritten or signed with another key)" in errors


def test_records_appended_after_the_head_without_the_key_are_not_accepted(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    last_file = _files(log.directory)[-1]
    newest = parse_record(_lines(last_file)[-1])
    template = make_record(
        seq=1, time=newest.time, event=AuditEvent.RETENTION_PRUNE, outcome=Outcome.SUCCESS,
        actor="appliance", prev=newest.hash,
    )  # fmt: skip
    forged = _rechain([template, template], newest.hash, newest.seq + 1)
    with last_file.open("ab") as fh:
        fh.write(b"".join(r.to_line() for r in forged))
    errors = _errors(verify(log.directory, key, anchor))
    assert len(errors) == 1
    assert errors[0].startswith(f"records {newest.seq + 1} to {newest.seq + 2} follow the head")
    with pytest.raises(StorageError, match="more than one unacknowledged line"):
        log.append(AuditEvent.LOGIN, actor="x", outcome=Outcome.SUCCESS)


def test_whole_log_deleted_after_a_checkpoint_is_detected(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    value = anchor.read()
    assert value > 0
    for path in [*_files(log.directory), log.directory / "head.json"]:
        path.unlink()
    said = f"the log has no anchored checkpoint but the TPM counter is {value}"
    assert _errors(verify(log.directory, key, anchor)) == [
        f"{said}: the log was rolled back or replaced"
    ]


def test_checkpoint_replayed_from_earlier_in_the_log_is_detected(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    assert _is_checkpoint(log.directory, 11)
    path, i = _where(log.directory, 11)
    replayed = _lines(path)[i]
    last_file = _files(log.directory)[-1]
    with last_file.open("ab") as fh:
        fh.write(replayed)
    errors = _errors(verify(log.directory, key, anchor))
    assert "record 11 appears twice (a copy was inserted or replayed)" in errors


def test_duplicate_key_that_other_readers_see_is_detected(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    """JSON may repeat a key: the verifier reads the last value, other tools may read the first.
    Only the canonical line is accepted, so no reader is shown a value the hash does not cover."""
    path, i = _where(log.directory, 17)
    lines = _lines(path)
    lines[i] = b'{"actor":"mallory",' + lines[i][1:]
    path.write_bytes(b"".join(lines))
    assert parse_record(lines[i]).actor != "mallory"  # the hash still matches what json reads
    report = verify(log.directory, key, anchor)
    assert _errors(report) == ["record 17 was modified (its bytes are not in canonical form)"]


def test_newest_record_moved_to_a_file_of_its_own_is_detected(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    """The head signs the file that holds the newest record (and its size there)."""
    last = _files(log.directory)[-1]
    lines = _lines(last)
    newest = parse_record(lines[-1]).seq
    last.write_bytes(b"".join(lines[:-1]))
    moved = log.directory / f"audit-{int(last.name[6:12]) + 1:06d}.log"
    moved.write_bytes(lines[-1])
    errors = _errors(verify(log.directory, key, anchor))
    assert errors == [f"record {newest} is in {moved.name} but the head says {last.name}"]


def test_oldest_file_deleted_behind_a_forged_prune_record_is_detected(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    """Only an acknowledged retention-prune record accounts for deleted files: one appended
    after the head (its SHA-256 link needs no key) does not."""
    oldest = _files(log.directory)[0]
    last = parse_record(_lines(oldest)[-1])
    oldest.unlink()
    last_file = _files(log.directory)[-1]
    newest = parse_record(_lines(last_file)[-1])
    detail = {"file": oldest.name, "last_deleted_seq": last.seq, "last_deleted_hash": last.hash}
    prune = make_record(
        seq=newest.seq + 1, time=newest.time, event=AuditEvent.RETENTION_PRUNE,
        outcome=Outcome.SUCCESS, actor="appliance", prev=newest.hash, detail=detail,
    )  # fmt: skip
    with last_file.open("ab") as fh:
        fh.write(prune.to_line())
    errors = _errors(verify(log.directory, key, anchor))
    gone = f"records 1 to {last.seq} are missing and no retention-prune record accounts for them"
    assert errors == [f"the log starts at record {last.seq + 1}: {gone}"]


def test_log_checked_against_another_tpm_is_detected(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    value = anchor.read()
    assert value > 1
    with running_swtpm() as other:
        errors = _errors(verify(log.directory, key, TpmCheckpointAnchor(other.tcti, INDEX)))
    said = f"the newest checkpoint carries anchor {value} but the TPM counter is only 0"
    assert errors == [f"{said}: the log belongs to another TPM"]


def test_checkpoint_anchor_going_down_is_detected_even_with_the_key(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    """Whoever holds the key can re-sign a checkpoint, but not make the anchors go back down."""
    newest = log.checkpoint()
    path = _files(log.directory)[-1]
    lines = _lines(path)
    assert parse_record(lines[-1]) == newest
    forged = make_record(
        seq=newest.seq, time=newest.time, event=AuditEvent.CHECKPOINT, outcome=newest.outcome,
        actor=newest.actor, prev=newest.prev, detail=newest.detail, anchor=1, key=key,
    )  # fmt: skip
    path.write_bytes(b"".join([*lines[:-1], forged.to_line()]))
    head = sign_head(key, seq=forged.seq, hash=forged.hash, file=path.name,
                     size=path.stat().st_size, checkpoint=forged.seq)  # fmt: skip
    (log.directory / "head.json").write_bytes(head.to_bytes())
    errors = _errors(verify(log.directory, key, anchor))
    assert any(
        f"record {forged.seq} carries anchor 1 after anchor" in e and "replayed" in e
        for e in errors
    )


@pytest.mark.parametrize("field", ["seq", "hash", "file", "size", "checkpoint"])
def test_head_with_any_field_edited_is_detected(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor, field: str
) -> None:
    """The head's signature covers every field: hiding a truncation takes only one edit."""
    path = log.directory / "head.json"
    head = json.loads(path.read_bytes())
    assert head["file"] != "audit-000001.log" and head["checkpoint"] > 0
    edits = {"seq": head["seq"] - 3, "hash": "0" * 64, "file": "audit-000001.log",
             "size": head["size"] - 1, "checkpoint": head["checkpoint"] - 1}  # fmt: skip
    head[field] = edits[field]
    path.write_bytes(json.dumps(head).encode())
    errors = _errors(verify(log.directory, key, anchor))
    assert "head.json is not valid: bad signature (rewritten or signed with another key)" in errors


FIELD_EDITS = {
    "time": "2031-01-01T00:00:00.000Z", "event": AuditEvent.LOGIN, "outcome": Outcome.FAILURE,
    "actor": "mallory", "role": "admin", "subject": "0" * 32, "model": "other-9.9",
    "detail": {"n": 99}, "flagged": True, "prev": "f" * 64,
}  # fmt: skip


@pytest.mark.parametrize("field", sorted(FIELD_EDITS))
def test_any_field_edited_in_canonical_form_is_detected(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor, field: str
) -> None:
    """Every field is in the record's hash: an edit that keeps the line canonical still shows."""
    path, i = _where(log.directory, 17)
    lines = _lines(path)
    lines[i] = dataclasses.replace(parse_record(lines[i]), **{field: FIELD_EDITS[field]}).to_line()
    path.write_bytes(b"".join(lines))
    errors = _errors(verify(log.directory, key, anchor))
    assert "record 17 was modified (its hash does not match its content)" in errors


def test_checkpoint_anchor_raised_and_log_rechained_is_detected(
    log: AuditLog, key: bytes, anchor: TpmCheckpointAnchor
) -> None:
    """An old checkpoint's anchor raised to the TPM's value (to cover a later rollback) breaks
    that checkpoint's signature, even with every SHA-256 link after it recomputed."""
    files = _files(log.directory)
    records = [(p, parse_record(raw)) for p in files for raw in _lines(p)]
    at = next(i for i, (_, r) in enumerate(records) if r.event is AuditEvent.CHECKPOINT)
    edited = dataclasses.replace(records[at][1], anchor=anchor.read())
    chained = _rechain([edited] + [r for _, r in records[at + 1 :]], edited.prev, edited.seq)
    final = records[:at] + [(p, r) for (p, _), r in zip(records[at:], chained, strict=True)]
    for path in files:
        path.write_bytes(b"".join(r.to_line() for p, r in final if p == path))
    errors = _errors(verify(log.directory, key, anchor))
    assert f"checkpoint at record {edited.seq} has a bad signature ({BAD_MAC})" in errors
