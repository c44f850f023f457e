"""The first-boot wizard from a fresh state folder, on real backends: a real swtpm, the real
identity service and audit log, a vendor-signed root and bundle on a tmp "USB stick", a real
pynetdicom SCP for the C-ECHO, the real update agent and OpenVINO for the self-test.

The system clock is never set here: off the box the wizard has no clock setter (the field is
disabled), and ``test_clock_is_set_through_the_setter_on_the_box`` hands it a recording setter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, Input, ListView

from appliance.audit.records import AuditEvent
from appliance.config import Config
from appliance.console import ConsoleBackends, create_app, from_runtime
from appliance.console.provision import Provisioning
from appliance.console.screens.dashboard import DashboardScreen
from appliance.console.screens.login import LoginScreen
from appliance.console.screens.update import UpdateScreen
from appliance.console.wizard.panes_trust import TrustPane
from appliance.console.wizard.screen import WizardScreen
from appliance.dicom.peers import load_peers
from appliance.runtime import Runtime, open_runtime
from appliance.setup import clock
from appliance.setup.progress import Step, load_progress
from appliance.setup.selftest import load_selftest
from appliance.trust import core
from provisioning.testmodel import build_model_dir
from provisioning.vendor import build_bundle
from tests.console.test_console import drive, log_in, settle, showing, text
from tests.console.test_update import select_bundle
from tests.dicom.test_peers import scp  # noqa: F401 - the PACS the wizard echoes
from tests.updates.conftest import NOT_BEFORE, RepoSim

ADMIN, PASSWORD = "jdoe", "grey lantern over quiet water"
LUKS_KEY = "fjkd-ufhv-cbrk-hkvv-tnnr-dcvi-ikbl-rbtg"
BUNDLE = "risk-demo-1.0.0.aplbundle"


@pytest.fixture
def fresh(config: Config, tmp_path: Path) -> Config:
    """A box at first boot: nothing enrolled, no account, a disk recovery key left by the image."""
    luks = tmp_path / "run" / "luks-recovery-key"
    luks.parent.mkdir()
    luks.write_text(LUKS_KEY + "\n")
    return dataclasses.replace(config, luks_recovery_file=luks)


@pytest.fixture
def usb(tmp_path: Path) -> Path:
    """The vendor's stick: its root of trust and one signed bundle of the demo model."""
    sim = RepoSim(tmp_path / "vendor")
    stick = tmp_path / "usb"
    stick.mkdir()
    (stick / "root.json").write_bytes(sim.first_root())
    model = build_model_dir(tmp_path / "model", name="risk-demo", version="1.0.0")
    build_bundle(model, sim.repo, sim.signers(), stick / BUNDLE, not_before=NOT_BEFORE)
    return stick


# This test machine as a box profile: it has no TPM device (the tests use swtpm) and may be small.
# The dashboard still checks the hardware against it, through the real profile loader.
TEST_MACHINE_PROFILE = """\
name = "test-machine"
description = "the machine running the tests, with swtpm"
int8_preferred = false
[devices]
expected = ["CPU"]
[devices.preferred_order]
interactive = ["CPU"]
batch = ["CPU"]
[tpm]
required = false
[memory]
min_gib = 0.5
[disk]
min_gib = 0.1
[cpu]
flags = ["sse2"]
"""


@pytest.fixture
def test_machine_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "hardware"
    folder.mkdir()
    (folder / "test-machine.toml").write_text(TEST_MACHINE_PROFILE)
    monkeypatch.setenv("APPLIANCE_HARDWARE_DIR", str(folder))


@pytest.fixture
def rt(fresh: Config) -> Iterator[Runtime]:
    with open_runtime(fresh) as runtime:
        yield runtime


@pytest.fixture
def backends(rt: Runtime, usb: Path) -> ConsoleBackends:
    return from_runtime(rt, refresh_s=60.0, usb_dir=usb)


async def fill(pilot: Pilot[None], **fields: str) -> None:
    for name, value in fields.items():
        pilot.app.screen.query_one(f"#{name.replace('_', '-')}", Input).value = value
    await pilot.pause()


async def press(pilot: Pilot[None], button: str) -> None:
    """Press a button as a click would (not by screen position: a toast may cover it)."""
    pilot.app.screen.query_one(f"#{button}", Button).press()
    await pilot.pause()
    await settle(pilot)


def current(pilot: Pilot[None]) -> Step | None:
    assert showing(pilot, WizardScreen)
    return cast(WizardScreen, pilot.app.screen).prov.progress().next_step


async def site_network_time(pilot: Pilot[None]) -> None:
    assert current(pilot) is Step.SITE
    await fill(pilot, site="St. Mary's Radiology", box_id="stmary-box1")
    await press(pilot, "next")
    assert current(pilot) is Step.NETWORK
    await pilot.click("#static")
    await fill(pilot, address="192.168.10.20/24", gateway="10.0.0.1", dns="192.168.10.1")
    await press(pilot, "next")
    assert "not another address inside 192.168.10.0/24" in text(pilot, "#step-error")
    await fill(pilot, gateway="192.168.10.1")
    await press(pilot, "next")
    assert current(pilot) is Step.TIME
    assert pilot.app.screen.query_one("#set-clock", Input).disabled  # not on the box
    await fill(pilot, tz="Mars/Olympus")
    await press(pilot, "next")
    assert "not a time zone" in text(pilot, "#step-error")
    await fill(pilot, tz="Europe/Berlin")
    await press(pilot, "next")


async def codes(pilot: Pilot[None]) -> str:
    """Seal the keys; confirm the recovery code and the disk key; returns the recovery code."""
    assert current(pilot) is Step.TRUST
    await press(pilot, "enroll")
    code = pilot.app.screen.query_one(TrustPane).code
    assert code in text(pilot, "#code")
    await fill(pilot, confirm="WRONG")
    await press(pilot, "confirmed")
    assert "not the last group of the recovery code" in text(pilot, "#step-error")
    await fill(pilot, confirm=code.rsplit("-", 1)[1].lower())
    await press(pilot, "confirmed")
    assert LUKS_KEY in text(pilot, "#code")  # the disk key, shown the same way
    await fill(pilot, confirm="rbtg")
    await press(pilot, "confirmed")
    return code


async def admin_root_peers(pilot: Pilot[None], pacs_port: int) -> None:
    assert current(pilot) is Step.ADMIN
    await fill(pilot, admin_user=ADMIN, admin_pw=PASSWORD, admin_pw2=PASSWORD)
    await press(pilot, "next")
    assert current(pilot) is Step.VENDOR_ROOT
    listing = pilot.app.screen.query_one("#roots", ListView)
    listing.focus()
    listing.index = 0
    await pilot.press("enter")
    await settle(pilot)
    assert "SHA-256 fingerprint" in text(pilot, "#root-info")
    await press(pilot, "trust")
    assert current(pilot) is Step.PEERS
    await fill(pilot, ae="PACS", host="127.0.0.1", port=str(pacs_port + 1 if pacs_port < 65535
                                                              else 1))  # fmt: skip
    await press(pilot, "add")
    assert "did not answer" in text(pilot, "#step-error")  # nothing listens there
    await fill(pilot, port=str(pacs_port), desc="main PACS")
    await press(pilot, "add")
    assert "PACS at 127.0.0.1" in text(pilot, "#peer-list")
    await press(pilot, "next")


async def import_bundle(pilot: Pilot[None]) -> None:
    """From the self-test step: the update screen, the preview, install with progress."""
    await press(pilot, "usb")
    assert showing(pilot, UpdateScreen)
    await select_bundle(pilot, BUNDLE)
    preview = text(pilot, "#bundle-preview")
    assert "model:          risk-demo 1.0.0" in preview
    assert "targets: 2 of 2 needed" in preview and "threshold met" in preview
    assert "compatibility:  compatible: needs OpenVINO >= " in preview
    await pilot.click("#yes")
    await settle(pilot)
    await settle(pilot)
    assert text(pilot, "#result") == "installed risk-demo 1.0.0, it is live"
    await pilot.press("escape")
    await pilot.pause()


@pytest.mark.usefixtures("test_machine_profile")
def test_whole_wizard_then_a_signed_bundle_then_a_green_dashboard(
    backends: ConsoleBackends,
    fresh: Config,
    scp: int,  # noqa: F811 - the imported fixture, by name
    rt: Runtime,
) -> None:
    app = create_app(backends)

    async def scenario(pilot: Pilot[None]) -> None:
        await site_network_time(pilot)
        await codes(pilot)
        await admin_root_peers(pilot, scp)
        assert current(pilot) is Step.SELF_TEST
        await import_bundle(pilot)
        assert "risk-demo" in text(pilot, "#models")
        await press(pilot, "run-test")
        assert text(pilot, "#selftest-result").startswith("PASS  risk-demo 1.0.0 (slot a)")
        await press(pilot, "finish")
        assert showing(pilot, DashboardScreen)
        await settle(pilot)
        dashboard = cast(DashboardScreen, pilot.app.screen)
        assert dashboard.report is not None
        assert dashboard.report.ok, [p for p in dashboard.report.problems if p.level == "error"]
        assert text(pilot, "#summary") == "No errors."
        assert "risk-demo" in text(pilot, "#models")

    drive(app, scenario)
    assert app.principal is not None and app.principal.username == ADMIN
    assert load_progress(fresh).finished
    network = (fresh.state_dir / "network" / "10-appliance.network").read_text()
    assert "Address=192.168.10.20/24\nGateway=192.168.10.1\nDNS=192.168.10.1" in network
    assert (fresh.provisioning_dir / "timezone").read_text() == "Europe/Berlin\n"
    assert (fresh.provisioning_dir / "localtime").readlink().name == "Berlin"
    assert not fresh.luks_recovery_file.exists()  # deleted once confirmed
    assert [p.ae_title for p in load_peers(fresh)] == ["PACS"]
    result = load_selftest(fresh)
    assert result is not None and result.passed and len(result.checks) == 1
    events = [(r.event, r.detail.get("action")) for r in rt.audit.records()]
    assert (AuditEvent.TRUST_CHANGE, "enroll") in events
    assert (AuditEvent.CONFIG_CHANGE, "import-vendor-root") in events
    assert any(e is AuditEvent.UPDATE_INSTALLED for e, _ in events)


def test_power_cut_midway_resumes_at_the_first_unfinished_step(
    backends: ConsoleBackends, fresh: Config, usb: Path
) -> None:
    async def first_boot(pilot: Pilot[None]) -> None:
        await site_network_time(pilot)
        assert current(pilot) is Step.TRUST

    drive(create_app(backends), first_boot)  # the app ends here: the power fails

    # A new console process on the same state folder (new runtime, new app).
    with open_runtime(fresh) as rt2:
        again = from_runtime(rt2, refresh_s=60.0, usb_dir=usb)

        async def after_power_cut(pilot: Pilot[None]) -> None:
            assert showing(pilot, WizardScreen)  # no admin yet: the wizard, no login
            assert current(pilot) is Step.TRUST
            assert "✓ 3. Time zone and clock" in text(pilot, "#wizard-steps")
            await press(pilot, "enroll")

        drive(create_app(again), after_power_cut)  # the code was shown, never confirmed

    with open_runtime(fresh) as rt3:
        third = from_runtime(rt3, refresh_s=60.0, usb_dir=usb)

        async def resumed_again(pilot: Pilot[None]) -> None:
            assert current(pilot) is Step.TRUST
            assert "a NEW recovery code replaces it" in text(pilot, "#trust-intro")
            code = await codes(pilot)
            with open_tpm_for(fresh) as tpm:
                core.key_store(fresh).recover(tpm, code)  # the new code is the one that works
            await fill(pilot, admin_user=ADMIN, admin_pw=PASSWORD, admin_pw2=PASSWORD)
            await press(pilot, "next")
            assert current(pilot) is Step.VENDOR_ROOT

        drive(create_app(third), resumed_again)

    with open_runtime(fresh) as rt4:  # past the admin step: log in first, then resume

        async def with_login(pilot: Pilot[None]) -> None:
            assert showing(pilot, LoginScreen)
            await log_in(pilot, ADMIN, PASSWORD)
            assert current(pilot) is Step.VENDOR_ROOT

        drive(create_app(from_runtime(rt4, refresh_s=60.0, usb_dir=usb)), with_login)


def open_tpm_for(config: Config):  # type: ignore[no-untyped-def]
    from appliance.trust.tpm import open_tpm

    return open_tpm(config.device_tcti())


def test_clock_is_set_through_the_setter_on_the_box(rt: Runtime, usb: Path) -> None:
    """Only ``timedatectl set-time`` may change the clock, and only on the box: here a recording
    setter stands in for it (this machine's clock must not change)."""
    wanted: list[datetime] = []
    backends = from_runtime(rt, refresh_s=60.0, usb_dir=usb)
    prov = cast(Provisioning, backends.provisioning)
    prov.set_clock = wanted.append

    async def scenario(pilot: Pilot[None]) -> None:
        await fill(pilot, site="Clinic", box_id="box1")
        await press(pilot, "next")
        await press(pilot, "next")  # DHCP
        await fill(pilot, tz="UTC", set_clock="2026-11-27 14:05")
        await press(pilot, "next")
        assert current(pilot) is Step.TRUST

    drive(create_app(backends), scenario)
    assert wanted == [datetime(2026, 11, 27, 14, 5)]
    # Set before enrollment, when the trail has no key: kept, then recorded at enrollment.
    kept = clock.noted_clock_sets(rt.config)
    assert [(c["action"], c["to"]) for c in kept] == [("set-clock", "2026-11-27 14:05:00 UTC")]
    prov.enroll()
    assert clock.noted_clock_sets(rt.config) == []
    # On an enrolled box, straight into the trail.
    prov.set_time(datetime(2026, 11, 28, 9, 30))
    changes = [r.detail for r in rt.audit.records() if r.event is AuditEvent.CONFIG_CHANGE]
    assert [(c["to"], c.get("recorded")) for c in changes] == [
        ("2026-11-27 14:05:00 UTC", "at enrollment"),
        ("2026-11-28 09:30:00 UTC", None),
    ]
    assert all(c["action"] == "set-clock" and c["from"].endswith(" UTC") for c in changes)


def test_wizard_first_step_snapshot(snap_compare: Any, rt: Runtime, tmp_path: Path) -> None:
    """The wizard as a fresh box opens it (no clock on this step, so the picture is stable)."""
    app = create_app(from_runtime(rt, refresh_s=60.0, usb_dir=tmp_path))
    assert snap_compare(app, terminal_size=(110, 32))
