"""kill -9 of `appliance dicom serve` under load, several times: every instance the senders saw
acknowledged is in the spool, indexed, and reads back intact."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid

from appliance.config import Config
from appliance.dicom.peers import Peer, save_peers
from appliance.dicom.store import StudyStore

from .conftest import SCU_AE, make_image, send

ROUNDS = 3
SENDERS = 3


def _start(config: Config) -> tuple[subprocess.Popen[str], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env |= {"APPLIANCE_CONFIG": "/nonexistent", "APPLIANCE_DICOM_PORT": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "--state-dir", str(config.state_dir),
         "--tcti", config.device_tcti(), "dicom", "serve", "--host", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    deadline, port = time.monotonic() + 60, 0
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if match := re.search(r"on 127\.0\.0\.1:(\d+)", line):
            port = int(match.group(1))
        if "ready; press Ctrl-C" in line and port:
            return proc, port
        if not line:
            break
    proc.kill()
    raise AssertionError("appliance dicom serve did not become ready")


def test_kill_9_under_load_loses_no_acknowledged_instance(config: Config) -> None:
    save_peers(config, [Peer(SCU_AE, "127.0.0.1", 104)])
    acknowledged: dict[str, bytes] = {}
    lock = threading.Lock()
    for _ in range(ROUNDS):
        proc, port = _start(config)
        stop = threading.Event()

        def load(port: int = port, stop: threading.Event = stop) -> None:
            study = generate_uid()
            seed = 0
            while not stop.is_set():
                seed += 1
                image = make_image("CT", study=study, rows=64, columns=64, seed=seed)
                try:
                    result = send(port, image)
                except (OSError, RuntimeError, ValueError):
                    return
                if isinstance(result, list) and getattr(result[0], "Status", None) == 0:
                    with lock:
                        acknowledged[str(image.SOPInstanceUID)] = image.PixelData
                elif not isinstance(result, list) or not result[0]:
                    return  # the server is gone (no answer, association failed)

        threads = [threading.Thread(target=load) for _ in range(SENDERS)]
        for t in threads:
            t.start()
        time.sleep(2.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert len(acknowledged) > ROUNDS, "the load produced too few acknowledged instances"
    store = StudyStore.open(config)
    try:
        indexed = store.instance_uids()  # before recover(): the row was committed before Success
        missing = set(acknowledged) - indexed
        assert not missing, f"{len(missing)} acknowledged instance(s) lost"
        store.recover()
        files = {
            str(dcmread(p).SOPInstanceUID): dcmread(p).PixelData
            for p in Path(store.spool).rglob("*.dcm")
        }
        for uid, pixels in acknowledged.items():
            assert files[uid] == pixels, "an acknowledged instance changed on disk"
    finally:
        store.close()
