"""``make models``'s bundle step: a development vendor made once under .state/vendor, a bundle per
model folder through the appliance-vendor CLI, installable on a box that trusts that vendor."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from appliance.config import Config
from appliance.runtime import open_runtime
from appliance.trust import core
from appliance.trust.tpm import open_tpm
from appliance.updates.agent import Phase, import_vendor_root
from appliance.updates.wiring import make_agent
from provisioning.devbundles import DevVendor, main
from provisioning.riskmodel import NAME

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, DevVendor, Path]:
    models = tmp_path / "models"
    shutil.copytree(MODELS / NAME, models / NAME)
    (models / "notes-wip").mkdir()  # a folder another helper has not finished: skipped
    return models, DevVendor(tmp_path / "state" / "vendor"), tmp_path / "build" / "bundles"


def run_main(layout: tuple[Path, DevVendor, Path]) -> int:
    models, vendor, out = layout
    return main(["--models", str(models), "--vendor", str(vendor.top), "--out", str(out)])


def test_first_run_creates_the_vendor_and_a_bundle_per_model(
    layout: tuple[Path, DevVendor, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, vendor, out = layout
    assert run_main(layout) == 0
    said = capsys.readouterr().out
    assert "created a development vendor" in said and "skipped" in said and "notes-wip" in said
    assert f"{NAME} 1.0.0 -> {out / f'{NAME}-1.0.0.aplbundle'}" in said
    assert "bundle      version 1" in said
    for role in ("root", "targets", "snapshot", "timestamp"):
        assert stat.S_IMODE(vendor.key(role).stat().st_mode) == 0o600
    root = vendor.root.read_bytes()
    assert run_main(layout) == 0  # the second run reuses the vendor: same root, next number
    said = capsys.readouterr().out
    assert "created" not in said and "bundle      version 2" in said
    assert vendor.root.read_bytes() == root


def test_a_broken_model_folder_is_named(
    layout: tuple[Path, DevVendor, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    models, _, _ = layout
    doc = json.loads((models / NAME / "manifest.json").read_text())
    (models / NAME / "manifest.json").write_text(json.dumps(doc | {"task": "astrology"}))
    assert run_main(layout) != 0
    assert "'astrology' is not a valid task" in capsys.readouterr().err


def test_a_box_that_trusts_the_dev_vendor_installs_its_bundle(
    layout: tuple[Path, DevVendor, Path], config: Config
) -> None:
    _, vendor, out = layout
    assert run_main(layout) == 0
    with open_tpm(config.device_tcti()) as tpm:
        core.enroll(tpm, config)
    with open_runtime(config) as rt:
        agent = make_agent(rt, "tech")
        import_vendor_root(agent.paths, vendor.root.read_bytes())
        state = agent.install(out / f"{NAME}-1.0.0.aplbundle")
        assert state.phase is Phase.DONE, state.reason
