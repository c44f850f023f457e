"""The console's screens check the same permission table as the CLI and the API."""

from __future__ import annotations

import pytest
from textual.pilot import Pilot

from appliance.console import ConsoleBackends, create_app
from appliance.console.screens.audit import may_read
from appliance.console.screens.dashboard import DashboardScreen
from appliance.console.screens.update import may_install
from appliance.identity.roles import ENTRY_POINTS, Principal, Role, may
from appliance.runtime import Runtime
from tests.console.conftest import ADMIN_PASSWORD
from tests.console.test_console import drive, log_in, settle, showing


@pytest.mark.parametrize("role", list(Role))
def test_console_screens_follow_the_permission_table(role: Role) -> None:
    who = Principal("someone", role, "s")
    assert may_install(who) == may(role, ENTRY_POINTS["console:update"])
    assert may_read(who) == may(role, ENTRY_POINTS["console:audit"])


NURSE_PASSWORD = "quiet river under green lamps"


@pytest.mark.parametrize(
    ("key", "notice"),
    [("u", "technician or admin"), ("a", "auditor or admin"), ("h", "technician or admin")],
    ids=["update", "audit", "health-report"],
)
def test_a_clinician_cannot_open_the_screen(
    backends: ConsoleBackends, runtime: Runtime, key: str, notice: str
) -> None:
    admin, _ = runtime.identity.login("alice", ADMIN_PASSWORD)
    runtime.identity.add_account(admin, "nurse", Role.CLINICIAN, NURSE_PASSWORD)
    runtime.identity.logout(admin)
    app = create_app(backends)

    async def scenario(pilot: Pilot[None]) -> None:
        await log_in(pilot, "nurse", NURSE_PASSWORD)
        await settle(pilot)
        await pilot.press(key)
        await pilot.pause()
        assert showing(pilot, DashboardScreen)
        assert any(notice in n.message for n in app._notifications)

    drive(app, scenario)
