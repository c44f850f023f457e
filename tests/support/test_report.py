"""The signed health report, attacked: a changed body, a changed PCR value and a quote from
another TPM must each fail the vendor's verification, and say which check failed."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.cli import main as appliance_main
from appliance.config import Config
from appliance.runtime import Runtime, open_runtime
from appliance.support.report import export_report, quoted_pcrs, sign
from appliance.trust import core
from appliance.trust.swtpm import Swtpm
from appliance.trust.tpm import open_tpm
from provisioning.__main__ import main as vendor_main
from provisioning.report import verify_report
from tests.conftest import ADMIN_PASSWORD, running_swtpm


@pytest.fixture
def rt(config: Config) -> Iterator[Runtime]:
    with open_tpm(config.device_tcti()) as tpm:
        core.enroll(tpm, config)
    with open_runtime(config) as runtime:
        runtime.identity.bootstrap_admin("alice", ADMIN_PASSWORD)
        yield runtime


@pytest.fixture
def report(rt: Runtime, tmp_path: Path) -> tuple[dict[str, Any], str]:
    """A report exported by the box, and its attestation key fingerprint as the vendor has it."""
    usb = tmp_path / "usb"
    usb.mkdir()
    path, fingerprint = export_report(rt, "alice", "admin", usb, devices=["CPU"])
    return json.loads(path.read_bytes()), fingerprint


@pytest.fixture
def other_tpm() -> Iterator[Swtpm]:
    with running_swtpm() as instance:
        yield instance


def failed(doc: dict[str, Any], ak: str) -> set[str]:
    return {c.name for c in verify_report(doc, ak) if not c.ok}


def test_an_honest_report_verifies_and_holds_what_support_needs(
    report: tuple[dict[str, Any], str], config: Config, rt: Runtime
) -> None:
    doc, ak = report
    assert failed(doc, ak) == set()
    body = doc["body"]
    assert body["box"]["by"] == "alice"
    assert body["versions"]["openvino"]
    assert body["hardware"]["openvino_devices"] == ["CPU"]
    # The TPM the box is configured with (the test's swtpm), not /dev/tpmrm0 nor an embedded one.
    assert config.tcti is not None
    assert (body["hardware"]["tpm_tcti"], body["hardware"]["tpm_device"]) == (config.tcti, None)
    assert body["trust"]["enrolled"] is True
    assert sorted(map(int, doc["pcrs"])) == list(quoted_pcrs(config))
    with open_tpm(config.device_tcti()) as tpm:
        assert tpm.loaded_handles() == 0  # the attestation key was flushed
    exports = [r for r in rt.audit.records() if r.detail.get("what") == "health-report"]
    assert len(exports) == 1


def test_changed_body_fails(report: tuple[dict[str, Any], str]) -> None:
    doc, ak = copy.deepcopy(report[0]), report[1]
    doc["body"]["trust"]["enrolled"] = False  # hide a problem from support
    assert failed(doc, ak) == {"body"}


def test_changed_pcr_value_fails(report: tuple[dict[str, Any], str]) -> None:
    doc, ak = copy.deepcopy(report[0]), report[1]
    doc["pcrs"]["7"] = "ab" * 32  # claim another Secure Boot state than the measured one
    assert failed(doc, ak) == {"PCRs"}


def test_quote_from_another_tpm_fails(
    report: tuple[dict[str, Any], str], other_tpm: Swtpm, config: Config
) -> None:
    doc, ak = report
    with open_tpm(other_tpm.tcti) as tpm:  # the same body, quoted by a TPM the attacker owns
        forged = sign(tpm, doc["body"], quoted_pcrs(config))
    assert failed(forged, ak) == {"attestation key"}
    spliced = copy.deepcopy(doc)  # the other TPM's quote under this box's key
    spliced["quote"]["attest"] = forged["quote"]["attest"]
    spliced["quote"]["signature"] = forged["quote"]["signature"]
    spliced["pcrs"] = forged["pcrs"]
    assert failed(spliced, ak) == {"quote signature"}


def test_vendor_command_says_what_fails(
    report: tuple[dict[str, Any], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc, ak = report
    good = tmp_path / "good.json"
    good.write_text(json.dumps(doc))
    assert vendor_main(["report", "verify", str(good), "--ak", ak]) == 0
    assert "VERIFIED" in capsys.readouterr().out
    doc["body"]["box"]["site"] = "elsewhere"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert vendor_main(["report", "verify", str(bad), "--ak", ak]) == 1
    out = capsys.readouterr().out
    assert "FAILED  body: the body was changed after it was quoted" in out
    assert "NOT verified" in out


def test_cli_writes_the_report(
    rt: Runtime, config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _admin, issued = rt.identity.login("alice", ADMIN_PASSWORD)
    monkeypatch.setenv("APPLIANCE_TOKEN", issued.token)
    monkeypatch.setenv("APPLIANCE_CONFIG", "/nonexistent")
    base = ["--state-dir", str(config.state_dir), "--tcti", config.device_tcti()]
    assert appliance_main([*base, "health", "report", "--out", str(tmp_path / "absent")]) == 2
    assert "no USB stick there" in capsys.readouterr().err
    assert appliance_main([*base, "health", "report", "--out", str(tmp_path)]) == 0
    written = list(tmp_path.glob("health-*.json"))
    assert len(written) == 1
    assert "attestation key" in capsys.readouterr().out
