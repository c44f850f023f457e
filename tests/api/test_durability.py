"""kill -9 of the serving process under load, many times: every acknowledged result is there."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from appliance.identity.roles import Role

from .conftest import Served
from .test_api import FEATURES, v2_body

ROUNDS = 4


def _start(box: Served) -> tuple[subprocess.Popen[str], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env |= {
        "APPLIANCE_CONFIG": "/nonexistent",
        "APPLIANCE_API_PORT": "0",
        "APPLIANCE_DICOM_PORT": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "--state-dir", str(box.config.state_dir),
         "--tcti", box.config.device_tcti(), "run"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    port = 0
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if match := re.search(r"api +https://127\.0\.0\.1:(\d+)", line):
            port = int(match.group(1))
        if "ready; press Ctrl-C" in line:
            return proc, port
        if not line:
            break
    proc.kill()
    raise AssertionError("appliance run did not become ready")


def test_kill_9_under_load_loses_no_acknowledged_result(prepared: Served) -> None:
    cert = Path(prepared.config.state_dir / "tls" / "site.crt")
    token = prepared.tokens[Role.SERVICE]
    acknowledged: list[str] = []
    lock = threading.Lock()
    for _ in range(ROUNDS):
        proc, port = _start(prepared)
        ctx = ssl.create_default_context(cafile=str(cert))
        stop = threading.Event()

        def load(port: int = port, stop: threading.Event = stop, ctx: ssl.SSLContext = ctx) -> None:
            with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ctx, timeout=10,
                              headers={"Authorization": f"Bearer {token}"}) as http:  # fmt: skip
                while not stop.is_set():
                    try:
                        answer = http.post("/v2/models/risk-demo/infer", json=v2_body(FEATURES))
                    except httpx.HTTPError:
                        return  # the server died mid-request: that one was never acknowledged
                    if answer.status_code == 200:
                        with lock:
                            acknowledged.append(answer.headers["X-Request-Id"])

        workers = [threading.Thread(target=load) for _ in range(4)]
        for w in workers:
            w.start()
        before = len(acknowledged)
        deadline = time.monotonic() + 60
        while len(acknowledged) < before + 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # under load, mid-request
        proc.wait()
        stop.set()
        for w in workers:
            w.join()
    proc, port = _start(prepared)
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ctx, timeout=10,
                          headers={"Authorization": f"Bearer {token}"}) as http:  # fmt: skip
            missing = [r for r in acknowledged if http.get(f"/v1/results/{r}").status_code != 200]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert len(acknowledged) >= ROUNDS * 20
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged results lost"
