"""systemd notify protocol for real: READY=1 once models are compiled, STATUS=, watchdog pings
from the event loop, STOPPING=1 on SIGTERM; read from a real notify socket."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openvino as ov
import pytest

from appliance.api.server import serve

from .conftest import Served


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = f"/tmp/ntf{os.getpid()}-{time.monotonic_ns() % 10**6}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    yield sock, path
    sock.close()
    Path(path).unlink(missing_ok=True)


def _messages(sock: socket.socket, seconds: float) -> list[str]:
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return out


def test_watchdog_pings_come_from_the_event_loop(
    prepared: Served, notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    api = serve(prepared.rt, ov.Core(), port=0)
    try:
        pings = [m for m in _messages(sock, 1.0) if m == "WATCHDOG=1"]
    finally:
        api.stop()
    assert len(pings) >= 5


def test_run_reports_ready_status_and_stopping(
    prepared: Served, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env |= {
        "APPLIANCE_CONFIG": "/nonexistent",
        "APPLIANCE_API_PORT": "0",
        "NOTIFY_SOCKET": path,
        "APPLIANCE_DICOM_PORT": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "--state-dir", str(prepared.config.state_dir),
         "--tcti", prepared.config.device_tcti(), "run"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 90
        while not any("READY=1" in m for m in seen) and time.monotonic() < deadline:
            seen += _messages(sock, 0.5)
        ready = next(m for m in seen if "READY=1" in m)
        assert "STATUS=serving 1 model(s)" in ready
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert any("STOPPING=1" in m for m in _messages(sock, 0.5) + seen)
    finally:
        proc.kill()
