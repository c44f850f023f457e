"""kill -9 of the serving process under load, many times: every acknowledged result is there."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from appliance.audit import AuditEvent
from appliance.audit import verify as audit_verify
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


def _killed_under_load(box: Served, clients: int, rounds: int, per_round: int) -> list[str]:
    """``rounds`` times: start the server, load it from ``clients`` keep-alive connections, kill
    it with -9 after ``per_round`` more answers; return the request ids that were answered 200."""
    cert = Path(box.config.state_dir / "tls" / "site.crt")
    token = box.tokens[Role.SERVICE]
    acknowledged: list[str] = []
    lock = threading.Lock()
    for round_ in range(rounds):
        proc, port = _start(box)
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

        workers = [threading.Thread(target=load) for _ in range(clients)]
        for w in workers:
            w.start()
        before = len(acknowledged)
        deadline = time.monotonic() + 60
        while len(acknowledged) < before + per_round and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.0037 * round_)  # lands the kill at different points of a group commit
        proc.send_signal(signal.SIGKILL)  # under load, mid-request
        proc.wait()
        stop.set()
        for w in workers:
            w.join()
    return acknowledged


def _missing_results(box: Served, acknowledged: list[str]) -> list[str]:
    """The acknowledged request ids the restarted server cannot answer."""
    cert = Path(box.config.state_dir / "tls" / "site.crt")
    headers = {"Authorization": f"Bearer {box.tokens[Role.SERVICE]}"}
    proc, port = _start(box)
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ctx, timeout=10,
                          headers=headers) as http:  # fmt: skip
            return [r for r in acknowledged if http.get(f"/v1/results/{r}").status_code != 200]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_kill_9_under_load_loses_no_acknowledged_result(prepared: Served) -> None:
    acknowledged = _killed_under_load(prepared, clients=4, rounds=ROUNDS, per_round=20)
    missing = _missing_results(prepared, acknowledged)
    assert len(acknowledged) >= ROUNDS * 20
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged results lost"


def test_kill_9_under_16_clients_keeps_every_acknowledged_result_and_its_audit_record(
    prepared: Served,
) -> None:
    # Group commit (ADR 0009): each kill lands while batches of audit records and result rows
    # are being written; whatever was answered must be in both stores afterwards.
    acknowledged = _killed_under_load(prepared, clients=16, rounds=5, per_round=60)
    missing = _missing_results(prepared, acknowledged)
    assert len(acknowledged) >= 5 * 60
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged results lost"
    audited = {
        r.detail.get("request_id")
        for r in prepared.rt.audit.records()
        if r.event is AuditEvent.INFERENCE
    }
    unaudited = set(acknowledged) - audited
    assert not unaudited, f"{len(unaudited)} acknowledged results have no audit record"
    # The audit record is queued before the inference and its fsync overlaps it, but it is on
    # disk before the result row is written: no kill leaves a stored result unaudited.
    with sqlite3.connect(prepared.config.state_dir / "results.db") as db:
        stored = {row[0] for row in db.execute("SELECT request_id FROM results")}
    assert len(stored) >= len(acknowledged)
    assert not stored - audited, f"{len(stored - audited)} stored results have no audit record"
    assert audit_verify(prepared.config.audit_dir, prepared.rt.audit_key,
                        prepared.rt.audit_anchor).ok  # fmt: skip
