"""Update import from the console: real backends, a real swtpm, a vendor-signed bundle of the real
demo model on a tmp "USB stick", the real update agent and OpenVINO validation gate."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import cast

import pytest
from textual.pilot import Pilot
from textual.widgets import ListView, Static

from appliance.config import Config
from appliance.console import ConsoleBackends, create_app
from appliance.console.screens.dashboard import DashboardScreen
from appliance.console.screens.update import UpdateScreen
from appliance.runtime import Runtime
from appliance.store.slots import ModelStore
from appliance.trust.swtpm import Swtpm
from appliance.updates.agent import AgentPaths, Phase, import_vendor_root
from appliance.updates.errors import CommitPendingError
from appliance.updates.lock import agent_lock
from appliance.updates.wiring import make_agent
from provisioning.testmodel import build_model_dir
from provisioning.vendor import build_bundle
from tests.console.conftest import ADMIN_PASSWORD
from tests.console.test_console import drive, log_in, settle, showing, text
from tests.updates.conftest import NOT_BEFORE, RepoSim
from tests.updates.test_agent import Box
from tests.updates.test_tpm_faults import stop_at

NURSE_PASSWORD = "quiet river under green lamps"
GOOD = "risk-demo-1.0.0.aplbundle"
JUNK = "holiday-photos.aplbundle"


@pytest.fixture
def usb(tmp_path: Path, config: Config, runtime: Runtime) -> Path:
    """A stick with one good signed bundle and one junk file; the box trusts the vendor root."""
    sim = RepoSim(tmp_path / "vendor")
    import_vendor_root(AgentPaths(config.updates_dir, config.models_dir), sim.first_root())
    stick = tmp_path / "usb"
    stick.mkdir()
    model = build_model_dir(tmp_path / "model", name="risk-demo", version="1.0.0")
    build_bundle(model, sim.repo, sim.signers(), stick / GOOD, not_before=NOT_BEFORE)
    (stick / JUNK).write_bytes(b"not a bundle at all\n" * 50)
    return stick


@pytest.fixture
def usb_backends(backends: ConsoleBackends, usb: Path) -> ConsoleBackends:
    return dataclasses.replace(backends, usb_dir=usb)


async def open_update(pilot: Pilot[None]) -> None:
    await log_in(pilot, "alice", ADMIN_PASSWORD)
    await settle(pilot)
    await pilot.press("u")
    await pilot.pause()


async def select_bundle(pilot: Pilot[None], name: str) -> None:
    """Choose a bundle on the update screen; its preview dialog opens."""
    assert showing(pilot, UpdateScreen)
    screen = cast(UpdateScreen, pilot.app.screen)
    listing = screen.query_one("#bundles", ListView)
    listing.focus()
    listing.index = [p.name for p in screen.bundles].index(name)
    await pilot.press("enter")
    await settle(pilot)


async def install(pilot: Pilot[None], name: str) -> None:
    await select_bundle(pilot, name)
    await pilot.click("#yes")
    await settle(pilot)
    await settle(pilot)


def active_version(config: Config, model: str) -> str | None:
    state = ModelStore(config.models_dir).state(model)
    info = state.slots.get(state.active) if state.active else None
    return info.version if info else None


def test_signed_bundle_from_usb_installs_and_goes_live(
    usb_backends: ConsoleBackends, config: Config
) -> None:
    async def scenario(pilot: Pilot[None]) -> None:
        await open_update(pilot)
        assert showing(pilot, UpdateScreen)
        labels = " ".join(str(w.render()) for w in pilot.app.screen.query("#bundles Label"))
        assert GOOD in labels
        assert JUNK in labels
        assert "KiB" in labels  # sizes shown
        await install(pilot, GOOD)
        assert text(pilot, "#result") == "installed risk-demo 1.0.0, it is live"
        assert pilot.app.screen.query_one("#result").has_class("ok")
        assert "done" in text(pilot, "#phase")

    drive(create_app(usb_backends), scenario)
    assert active_version(config, "risk-demo") == "1.0.0"


def test_junk_file_on_usb_is_refused_with_a_reason(
    usb_backends: ConsoleBackends, config: Config
) -> None:
    async def scenario(pilot: Pilot[None]) -> None:
        await open_update(pilot)
        await install(pilot, JUNK)
        result = text(pilot, "#result")
        assert result.startswith("refused, nothing changed: ")
        assert len(result) > len("refused, nothing changed: ") + 5  # a reason, not just a verdict
        assert pilot.app.screen.query_one("#result").has_class("refused")

    drive(create_app(usb_backends), scenario)
    assert active_version(config, "risk-demo") is None


def test_no_stick_says_so(backends: ConsoleBackends, tmp_path: Path) -> None:
    async def scenario(pilot: Pilot[None]) -> None:
        await open_update(pilot)
        assert "insert the USB stick" in text(pilot, "#no-bundles")
        await pilot.press("escape")
        await pilot.pause()
        assert showing(pilot, DashboardScreen)

    drive(create_app(dataclasses.replace(backends, usb_dir=tmp_path / "absent")), scenario)


@pytest.fixture
def pending_commit(runtime: Runtime, config: Config, swtpm: Swtpm, tmp_path: Path) -> None:
    """risk-demo 1.0.0 live; 1.1.0 validated, then its commit stopped by the TPM going away; the
    same TPM answers again, but nothing has finished the commit yet."""
    sim = RepoSim(tmp_path / "vendor")
    import_vendor_root(AgentPaths(config.updates_dir, config.models_dir), sim.first_root())
    box = Box(config, runtime, sim, token="")
    assert box.agent().install(box.bundle("1.0.0")).phase is Phase.DONE
    validated = stop_at(swtpm, lambda e: e.phase is Phase.VALIDATE and e.done == e.total)
    with pytest.raises(CommitPendingError):
        make_agent(runtime, "tech", validated).install(box.bundle("1.1.0"))
    swtpm.start()


def test_dashboard_shows_a_pending_commit_and_what_to_do(
    pending_commit: None, backends: ConsoleBackends
) -> None:
    async def scenario(pilot: Pilot[None]) -> None:
        await log_in(pilot, "alice", ADMIN_PASSWORD)
        await settle(pilot)
        panel = text(pilot, "#update")
        assert "risk-demo 1.1.0 passed validation but its commit did not finish" in panel
        assert "`appliance update status`" in panel  # what to do
        assert "problem(s) need action" in text(pilot, "#summary")
        widget = pilot.app.screen.query_one("#update", Static)
        room = widget.content_region
        lines = widget.get_content_height(room.size, room.size, room.width)
        assert lines <= room.height, "the panel cuts off what to do"

    drive(create_app(backends), scenario)


def test_a_commit_an_update_process_is_running_is_not_shown_as_pending(
    pending_commit: None, backends: ConsoleBackends, config: Config
) -> None:
    """The agent lock held (an install, or `appliance run` finishing the commit at start): the
    commit is under way, not left pending."""

    async def scenario(pilot: Pilot[None]) -> None:
        await log_in(pilot, "alice", ADMIN_PASSWORD)
        await settle(pilot)
        assert "last update: commit risk-demo 1.1.0" in text(pilot, "#update")
        assert "did not finish" not in text(pilot, "#update")

    with agent_lock(config.updates_dir, wait=False, waiting=lambda: None) as held:
        assert held
        drive(create_app(backends), scenario)
