"""Boot the real image under QEMU (OVMF, swtpm tpm-crb) three times, as one box.

1. First boot, with a provisioning seed (fw_cfg system credential): the data volume is formatted
   as LUKS2 and its key sealed in the TPM to PCR 7; the API answers over the forwarded port with
   the box's certificate. Then a USB stick holding a signed bundle is plugged in (QMP hot-plug):
   the udev-started update agent installs the bundle, and a real inference returns what OpenVINO
   on this host computes.
2. Second boot, same disk and TPM, no stick, no seed: the TPM unlocks the data volume, the model
   and the token are still there, the inference works again.
3. Third boot with another firmware variable store (one more revoked hash in dbx, as a firmware
   or dbx update adds): PCR 7 differs, the TPM refuses to unlock, the API does not start, and the
   console on the serial line explains the recovery path.

Every boot: `systemctl --failed` empty (boots 1-2), the nftables rules loaded with default-deny
egress, the console running on ttyS0. Prints `boot_to_ready_s: X` (first and second boot) past
pytest's capture. The image is built by `make test` before pytest (`make image`); without it the
test says how to build it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from provisioning.testmodel import build_model_dir

REPO = Path(__file__).resolve().parents[2]
IMAGE = Path(os.environ.get("APPLIANCE_IMAGE", REPO / "build/image/appliance.img"))
sys.path.insert(0, str(REPO / "image"))
from vm import VirtualMachine  # noqa: E402

VENDOR = [str(REPO / ".venv/bin/appliance-vendor")]
BOOT_TIMEOUT = float(os.environ.get("APPLIANCE_BOOT_TIMEOUT", "1500"))
FEATURES = [0.5, -1.0, 0.25, 0.0, 1.5, -0.5, 0.75, 1.0]

pytestmark = [pytest.mark.timeout(int(BOOT_TIMEOUT * 4))]
if not IMAGE.exists():
    pytestmark.append(
        pytest.mark.skip(reason=f"no image at {IMAGE}: run `make image` (make test does)")
    )
for tool in ("qemu-system-x86_64", "swtpm", "mkfs.vfat", "mcopy"):
    if shutil.which(tool) is None:
        pytestmark.append(pytest.mark.skip(reason=f"{tool} is missing: `make test` installs it"))


def vendor(*args: str | Path) -> None:
    subprocess.run([*VENDOR, *map(str, args)], check=True, capture_output=True)


def make_stick(bundle_dir: Path, stick: Path) -> None:
    """A FAT USB stick image with the bundle on it, made without mounting (mtools)."""
    subprocess.run(
        ["mkfs.vfat", "-C", "-n", "VENDOR", str(stick), "65536"], check=True, capture_output=True
    )
    files = sorted(bundle_dir.iterdir())
    subprocess.run(
        ["mcopy", "-i", str(stick), *map(str, files), "::/"],
        check=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    )


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The vendor side (keys, repo, a signed risk-demo bundle on a stick), the seed, the VM."""
    work = tmp_path_factory.mktemp("box")
    keys = work / "keys"
    keys.mkdir()
    for role, n in (("root", 1), ("targets", 1), ("snapshot", 1), ("timestamp", 1)):
        vendor("keys", "create", "--role", role, "--out", keys / f"{role}{n}.pem")
    vendor(
        "repo",
        "init",
        "--repo",
        work / "repo",
        "--root-key",
        keys / "root1.pem",
        "--root-threshold",
        "1",
        "--targets-key",
        keys / "targets1.pem",
        "--targets-threshold",
        "1",
        "--snapshot-key",
        keys / "snapshot1.pem",
        "--timestamp-key",
        keys / "timestamp1.pem",
    )
    model = build_model_dir(work / "risk-demo")
    usb = work / "usb"
    usb.mkdir()
    vendor(
        "bundle",
        "build",
        model,
        "--repo",
        work / "repo",
        "--out",
        usb,
        "--targets-key",
        keys / "targets1.pem",
        "--snapshot-key",
        keys / "snapshot1.pem",
        "--timestamp-key",
        keys / "timestamp1.pem",
        "--not-before",
        "2020-01-01T00:00:00Z",
    )
    stick = work / "stick.img"
    make_stick(usb, stick)
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    seed = work / "seed.json"
    seed.write_text(
        json.dumps(
            {
                "admin": {"username": "tech", "password": "correct horse battery staple 7"},
                "vendor_root": json.loads((work / "repo/metadata/1.root.json").read_text()),
                "service_accounts": [
                    {
                        "username": "boot-test",
                        "token_id": token_id,
                        "secret_sha256": hashlib.sha256(secret.encode()).hexdigest(),
                    }
                ],
            }
        )
    )
    import openvino as ov

    compiled = ov.Core().compile_model(
        str(model / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    expected = compiled(np.array([FEATURES], dtype=np.float32))[0].reshape(-1).tolist()
    yield {
        "work": work,
        "seed": seed,
        "stick": stick,
        "expected": expected,
        "token": f"apl_{token_id}_{secret}",
    }


def report(config: pytest.Config, name: str, value: float) -> None:
    """A figure for the log: kept for the run's terminal summary (tests/conftest.py), which
    prints past pytest's output capture."""
    line = f"{name}: {value:.1f}"
    figures: list[str] = getattr(config, "appliance_figures", [])
    figures.append(line)
    config.appliance_figures = figures  # type: ignore[attr-defined]
    print(line)


class Api:
    """The box's API through QEMU's forwarded port, pinned to the certificate the box reports.

    The diagnostics port (a channel the VM's owner controls) gives the certificate's SHA-256; the
    certificate the port serves must match it, and is then the only one trusted.
    """

    def __init__(self, vm: VirtualMachine) -> None:
        self.vm = vm
        self.base = f"https://127.0.0.1:{vm.api_port}"
        self.context: ssl.SSLContext | None = None

    def pin(self) -> bool:
        expected = (self.vm.diag() or {}).get("api_cert_sha256")
        if not expected:
            return False
        try:
            pem = ssl.get_server_certificate(("127.0.0.1", self.vm.api_port), timeout=5)
        except OSError:
            return False
        served = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
        assert served == expected, "the API must serve the box's own certificate"
        self.context = ssl.create_default_context(cadata=pem)
        return True

    def get(self, path: str, token: str | None = None) -> httpx.Response | None:
        if self.context is None and not self.pin():
            return None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            return httpx.get(self.base + path, headers=headers, verify=self.context, timeout=10)
        except httpx.HTTPError:
            return None

    def ok(self, path: str, token: str | None = None) -> bool:
        r = self.get(path, token)
        return r is not None and r.status_code == 200

    def infer(self, token: str) -> httpx.Response:
        assert self.context is not None
        body = {
            "inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32", "data": FEATURES}]
        }
        return httpx.post(
            f"{self.base}/v2/models/risk-demo/infer",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            verify=self.context,
            timeout=60,
        )


def settled(vm: VirtualMachine) -> dict[str, Any] | None:
    d = vm.diag()
    return d if d and d["jobs"] == 0 and d["system"] in ("running", "degraded") else None


def console_text(vm: VirtualMachine) -> str:
    raw = vm.console_log.read_bytes().decode(errors="replace")
    return re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]", "", raw)


def check_common(vm: VirtualMachine) -> dict[str, Any]:
    d = vm.wait_for("a settled system", lambda: settled(vm), BOOT_TIMEOUT)
    assert "table inet filter" in d["nft_tables"], d["nft_tables"]
    assert d["nft_output_drop"] and d["nft_input_drop"], "egress/ingress must be default-deny"
    assert d["units"]["appliance-console@ttyS0.service"] == "active"
    assert d["units"]["nftables.service"] == "active"
    return d


def serving(vm: VirtualMachine, box: dict[str, Any], config: pytest.Config) -> Api:
    """Wait until the API is ready and the model answers; report boot-to-ready; check outputs."""
    api = Api(vm)
    vm.wait_for("API ready", lambda: api.ok("/v2/health/ready", box["token"]), BOOT_TIMEOUT)
    report(config, "boot_to_ready_s", time.monotonic() - vm.started)
    vm.wait_for(
        "the model ready", lambda: api.ok("/v2/models/risk-demo/ready", box["token"]), BOOT_TIMEOUT
    )
    r = api.infer(box["token"])
    assert r.status_code == 200, r.text
    got = r.json()["outputs"][0]["data"]
    assert np.allclose(got, box["expected"], atol=1e-6), (got, box["expected"])
    assert api.infer("apl_000000000000_forged").status_code == 401
    return api


def first_boot(state: Path, box: dict[str, Any], config: pytest.Config) -> str:
    vm = VirtualMachine(IMAGE, state, seed=box["seed"])
    vm.start()
    try:
        # The seed made the service account whose token the test holds (before: 401).
        vm.wait_for(
            "the seed applied",
            lambda: (vm.diag() or {}).get("units", {}).get("appliance-seed.service") == "active",
            BOOT_TIMEOUT,
        )
        # The technician plugs the vendor's stick in: udev starts the update agent.
        vm.plug_usb(box["stick"])
        serving(vm, box, config)
        d = check_common(vm)
        assert d["failed"] == [], d["failed"]
        assert d["data_volume"].startswith("unlocked"), d["data_volume"]
        assert d["recovery_key_waiting"], "the new volume's recovery key waits for the console"
        assert "appliance" in console_text(vm).lower(), "the console runs on the serial line"
        return str(d["pcr7"])
    finally:
        vm.stop()


def second_boot(state: Path, box: dict[str, Any], config: pytest.Config, pcr7: str) -> None:
    vm = VirtualMachine(IMAGE, state)
    vm.start()
    try:
        serving(vm, box, config)  # the same model and token, from the TPM-unlocked volume
        d = check_common(vm)
        assert d["failed"] == [], d["failed"]
        assert d["data_volume"] == "unlocked"
        assert d["pcr7"] == pcr7
    finally:
        vm.stop()


def changed_pcr7_boot(state: Path, pcr7: str, token: str) -> None:
    vm = VirtualMachine(IMAGE, state, firmware_vars="dbx-update")
    vm.start()
    try:
        d = vm.wait_for(
            "the data volume refused",
            lambda: (x := vm.diag()) and (x["data_volume"] or "").startswith("locked") and x,
            BOOT_TIMEOUT,
        )
        assert d["pcr7"] != pcr7, "the dbx update must change PCR 7"
        d = check_common(vm)
        assert "appliance-data.service" in " ".join(d["failed"])
        assert d["units"]["appliance.service"] != "active"
        assert not Api(vm).ok("/v2/health/ready", token)
        vm.wait_for(
            "the console's recovery explanation", lambda: "recovery key" in console_text(vm), 300
        )
    finally:
        vm.stop()


def test_two_boots_then_a_changed_pcr7(
    box: dict[str, Any], tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    state = tmp_path / "vm"
    pcr7 = first_boot(state, box, pytestconfig)
    second_boot(state, box, pytestconfig, pcr7)
    changed_pcr7_boot(state, pcr7, box["token"])
