"""An update on a full state partition (a real ENOSPC on a small tmpfs): the bundle that filled
the disk is refused and its half-written slot is cleared, so the box gets its space back."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.audit.records import AuditEvent
from appliance.config import Config
from appliance.trust.swtpm import Swtpm
from appliance.updates.agent import Phase
from provisioning.testmodel import build_model_dir
from provisioning.vendor import build_bundle
from tests.conftest import SmallDisk, small_disk

from .conftest import NOT_BEFORE, RepoSim
from .test_agent import Box, provisioned_box

PAGE = 4096


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(tmp_path / "state", size_mb=32) as mounted:
        yield mounted


@pytest.fixture
def config(disk: SmallDisk, swtpm: Swtpm) -> Config:
    """The box's state on the small disk (the USB stick, the test's repository, is not)."""
    return Config(state_dir=disk.path, tcti=swtpm.tcti)


@pytest.fixture
def box(config: Config, sim: RepoSim) -> Iterator[Box]:
    with provisioned_box(config, sim.first_root()) as (rt, token):
        yield Box(config, rt, sim, token)


def _free(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def test_a_bundle_that_fills_the_disk_is_refused_and_its_slot_cleared(
    box: Box, disk: SmallDisk, sim: RepoSim
) -> None:
    box.agent().install(box.bundle("1.0.0"))
    big = sim.top / "big"
    build_model_dir(big, name="risk-demo", version="1.1.0", size_mb=12)
    bundle = build_bundle(big, sim.repo, sim.signers(), sim.out / "big.aplbundle",
                          not_before=NOT_BEFORE).path  # fmt: skip
    disk.fill(leave=256 * PAGE)  # 1 MiB left: the agent's own files fit, the weights do not
    before = _free(disk.path)
    state = box.agent().install(bundle)
    assert state.phase is Phase.FAILURE, state
    assert "No space left on device" in (state.reason or ""), state.reason
    assert _free(disk.path) >= before - 16 * PAGE, "the half-written slot kept the disk full"
    assert box.active_version() == "1.0.0"
    refused = [r for r in box.rt.audit.records() if r.event is AuditEvent.UPDATE_REFUSED]
    assert refused and "No space left" in str(refused[-1].detail["reason"])
    disk.free()
    assert box.agent().install(box.bundle("1.2.0")).phase is Phase.DONE


def _used(folder: Path) -> int:
    """Bytes the files under ``folder`` take on the disk (whole pages)."""
    return sum(f.stat().st_blocks * 512 for f in folder.rglob("*") if f.is_file())


def test_a_disk_that_fills_while_the_slot_is_made_durable_ends_in_failure(
    box: Box, disk: SmallDisk, sim: RepoSim
) -> None:
    # Room for the new slot's bytes and not much more: VERIFY streams them in, then the writes
    # of INSTALL (its state, slot.json, the staged metadata) meet the full disk.
    folders = {}
    for version in ("1.0.0", "1.1.0"):
        folders[version] = sim.top / version
        build_model_dir(folders[version], name="risk-demo", version=version, size_mb=4)
    bundles = {
        version: build_bundle(folder, sim.repo, sim.signers(),
                              sim.out / f"{version}.aplbundle", not_before=NOT_BEFORE).path
        for version, folder in folders.items()
    }  # fmt: skip
    assert box.agent().install(bundles["1.0.0"]).phase is Phase.DONE
    slot = box.config.models_dir / "risk-demo" / "a"
    disk.fill(leave=_used(slot))  # what 1.1.0's slot takes, the same sizes but its version
    before = _free(disk.path)
    state = box.agent().install(bundles["1.1.0"])
    assert state.phase is Phase.FAILURE, state
    assert (state.reason or "").startswith("not installed: "), state.reason
    assert "No space left on device" in (state.reason or "")
    assert _free(disk.path) >= before - 16 * PAGE, "the half-installed slot kept the disk full"
    assert box.active_version() == "1.0.0"
    disk.free()
    assert box.agent().install(box.bundle("1.2.0")).phase is Phase.DONE
