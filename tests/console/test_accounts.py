"""The accounts screen: an admin adds, disables, enables, unlocks and resets staff accounts on the
console, through the real identity service (real swtpm, real audit log); refusals show the
service's words; other roles cannot open it."""

from __future__ import annotations

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Input, Select

from appliance.audit.records import AuditEvent
from appliance.console import ConsoleApp, ConsoleBackends, create_app
from appliance.console.screens.accounts import (
    AccountsScreen,
    ChangePasswordDialog,
    NewAccountDialog,
    PasswordDialog,
)
from appliance.console.screens.dashboard import DashboardScreen
from appliance.errors import AuthenticationError, SessionExpiredError
from appliance.identity.roles import Role
from appliance.runtime import Runtime
from tests.console.conftest import ADMIN_PASSWORD
from tests.console.test_console import drive, log_in, open_screen, settle, showing, text

NURSE_PASSWORD = "quiet river under green lamps"
NEW_PASSWORD = "a fresh passphrase of words"


async def open_accounts(pilot: Pilot[None]) -> AccountsScreen:
    return await open_screen(pilot, "s", AccountsScreen)


def rows(screen: AccountsScreen) -> dict[str, tuple[str, str]]:
    table = screen.query_one("#accounts", DataTable)
    cells = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
    return {name: (role, state) for name, role, state in cells}


async def select(pilot: Pilot[None], screen: AccountsScreen, name: str) -> None:
    names = [a.username for a in screen.accounts]
    screen.query_one("#accounts", DataTable).move_cursor(row=names.index(name))
    await pilot.pause()


async def press(pilot: Pilot[None], button: str) -> None:
    await pilot.click(button)
    await settle(pilot)
    await pilot.pause(0.25)  # a button ignores clicks for 0.2 s after one (its press effect)


def changes(runtime: Runtime, account: str) -> list[str]:
    return [str(r.detail["action"]) for r in runtime.audit.records()
            if r.event is AuditEvent.ACCOUNT_CHANGE and r.detail["account"] == account]  # fmt: skip


def with_account(backends: ConsoleBackends, runtime: Runtime, name: str, role: Role) -> ConsoleApp:
    """The console app, on a box where the admin has added ``name`` (password NURSE_PASSWORD)."""
    admin, _ = runtime.identity.login("alice", ADMIN_PASSWORD)
    runtime.identity.add_account(admin, name, role, NURSE_PASSWORD)
    return create_app(backends)


def test_an_admin_adds_a_clinician_who_can_then_log_in(
    backends: ConsoleBackends, runtime: Runtime
) -> None:
    async def scenario(pilot: Pilot[None]) -> None:
        screen = await open_accounts(pilot)
        assert rows(screen)["alice"] == ("admin", "active")
        await press(pilot, "#add")
        dialog = pilot.app.screen
        assert isinstance(dialog, NewAccountDialog)
        dialog.query_one("#new-user", Input).value = "nurse"
        dialog.query_one("#password", Input).value = NURSE_PASSWORD
        dialog.query_one("#repeat", Input).value = NURSE_PASSWORD + "x"
        await press(pilot, "#yes")
        assert "differ" in text(pilot, "#dialog-error")  # still the dialog, nothing created
        dialog.query_one("#repeat", Input).value = NURSE_PASSWORD
        await press(pilot, "#yes")
        assert showing(pilot, AccountsScreen), (pilot.app.screen, text(pilot, "#dialog-error"))
        assert rows(screen)["nurse"] == ("clinician", "active")
        assert "Account 'nurse' (clinician) created." in text(pilot, "#account-result")

    drive(create_app(backends), scenario)
    principal, _ = runtime.identity.login("nurse", NURSE_PASSWORD)
    assert principal.role is Role.CLINICIAN
    assert changes(runtime, "nurse") == ["create"]


def test_a_service_account_gets_no_password_and_a_weak_password_is_refused_in_words(
    backends: ConsoleBackends, runtime: Runtime
) -> None:
    async def scenario(pilot: Pilot[None]) -> None:
        screen = await open_accounts(pilot)
        await press(pilot, "#add")
        dialog = pilot.app.screen
        dialog.query_one("#new-user", Input).value = "pacs"
        dialog.query_one("#new-role", Select).value = Role.SERVICE.value
        await pilot.pause()
        assert dialog.query_one("#password", Input).disabled
        await press(pilot, "#yes")
        assert rows(screen)["pacs"] == ("service", "active")
        await select(pilot, screen, "pacs")
        assert screen.query_one("#password", Button).disabled  # nothing to reset
        await press(pilot, "#add")
        dialog = pilot.app.screen
        dialog.query_one("#new-user", Input).value = "bob"
        dialog.query_one("#password", Input).value = "short"
        dialog.query_one("#repeat", Input).value = "short"
        await press(pilot, "#yes")
        result = text(pilot, "#account-result")
        assert result.startswith("Refused:") and "at least 12" in result
        assert "bob" not in rows(screen)

    drive(create_app(backends), scenario)
    assert changes(runtime, "bob") == []


def test_disable_enable_unlock_and_reset_on_the_console(
    backends: ConsoleBackends, runtime: Runtime
) -> None:
    admin, _ = runtime.identity.login("alice", ADMIN_PASSWORD)
    runtime.identity.add_account(admin, "nurse", Role.CLINICIAN, NURSE_PASSWORD)
    _, session = runtime.identity.login("nurse", NURSE_PASSWORD)
    for _ in range(runtime.identity.policy.lockout_threshold):
        with pytest.raises(AuthenticationError):
            runtime.identity.login("nurse", "a wrong guess, again")

    async def scenario(pilot: Pilot[None]) -> None:
        screen = await open_accounts(pilot)
        assert rows(screen)["nurse"][1].startswith("LOCKED until")
        await select(pilot, screen, "nurse")
        assert not screen.query_one("#unlock", Button).disabled
        assert screen.query_one("#enable", Button).disabled
        await press(pilot, "#unlock")
        assert rows(screen)["nurse"][1] == "active"
        await press(pilot, "#disable")
        await press(pilot, "#yes")  # the confirmation
        assert rows(screen)["nurse"][1] == "disabled"
        await select(pilot, screen, "nurse")
        await press(pilot, "#enable")
        assert rows(screen)["nurse"][1] == "active"
        await select(pilot, screen, "nurse")
        await press(pilot, "#password")
        dialog = pilot.app.screen
        assert isinstance(dialog, PasswordDialog)
        dialog.query_one("#password", Input).value = NEW_PASSWORD
        dialog.query_one("#repeat", Input).value = NEW_PASSWORD
        await press(pilot, "#yes")
        assert "Password of 'nurse' reset" in text(pilot, "#account-result")
        await select(pilot, screen, "alice")
        assert screen.query_one("#password", Button).disabled  # her own: `p`, knowing it
        await press(pilot, "#disable")
        await press(pilot, "#yes")
        assert "'alice' is the last active admin" in text(pilot, "#account-result")
        assert rows(screen)["alice"] == ("admin", "active")

    drive(create_app(backends), scenario)
    with pytest.raises(SessionExpiredError):
        runtime.identity.authenticate(session.token)
    with pytest.raises(AuthenticationError):
        runtime.identity.login("nurse", NURSE_PASSWORD)
    runtime.identity.login("nurse", NEW_PASSWORD)
    assert changes(runtime, "nurse") == ["create", "unlock", "disable", "enable", "password reset"]


def test_only_an_admin_opens_the_accounts_screen(
    backends: ConsoleBackends, runtime: Runtime
) -> None:
    app = with_account(backends, runtime, "tech", Role.TECHNICIAN)

    async def scenario(pilot: Pilot[None]) -> None:
        await log_in(pilot, "tech", NURSE_PASSWORD)
        await settle(pilot)
        await pilot.press("s")
        await pilot.pause()
        assert showing(pilot, DashboardScreen)
        assert any("needs an admin account" in n.message for n in app._notifications)

    drive(app, scenario)


def test_a_clinician_changes_their_own_password_on_the_console(
    backends: ConsoleBackends, runtime: Runtime
) -> None:
    app = with_account(backends, runtime, "nurse", Role.CLINICIAN)

    async def change(pilot: Pilot[None], current: str) -> None:
        await pilot.press("p")
        await settle(pilot)
        dialog = pilot.app.screen
        assert isinstance(dialog, ChangePasswordDialog)
        dialog.query_one("#current", Input).value = current
        dialog.query_one("#password", Input).value = NEW_PASSWORD
        dialog.query_one("#repeat", Input).value = NEW_PASSWORD
        await press(pilot, "#yes")
        assert showing(pilot, DashboardScreen)

    async def scenario(pilot: Pilot[None]) -> None:
        await log_in(pilot, "nurse", NURSE_PASSWORD)
        await settle(pilot)
        await change(pilot, "not my password at all")
        assert any("current password is wrong" in n.message for n in app._notifications)
        await change(pilot, NURSE_PASSWORD)
        assert any("Your password is changed" in n.message for n in app._notifications)

    drive(app, scenario)
    with pytest.raises(AuthenticationError):
        runtime.identity.login("nurse", NURSE_PASSWORD)
    runtime.identity.login("nurse", NEW_PASSWORD)
    assert changes(runtime, "nurse") == ["create", "password"]
