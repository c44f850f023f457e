"""Atomic persistence: an acknowledged write survives kill -9; a torn file never appears."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.errors import StorageError
from appliance.fsutil import atomic_write

WRITER = """
import sys
from pathlib import Path
from appliance.fsutil import atomic_write
path = Path(sys.argv[1])
for i in range(1, 100000):
    atomic_write(path, (f"{i}\\n" * 20000).encode())
    print(i, flush=True)
"""


def test_replaces_content_and_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "f.json"
    atomic_write(path, b"one")
    atomic_write(path, b"two")
    assert path.read_bytes() == b"two"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["f.json"]


def test_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageError, match="cannot write"):
        atomic_write(blocker / "x", b"data")


@pytest.mark.parametrize("acks", [3, 17, 40])
def test_kill_9_keeps_the_last_acknowledged_version(tmp_path: Path, acks: int) -> None:
    path = tmp_path / "state.txt"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    last = 0
    for _ in range(acks):
        last = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines = path.read_text().splitlines()
    assert len(lines) == 20000 and len(set(lines)) == 1, "a torn file after kill -9"
    assert int(lines[0]) >= last
