"""Pilot tests of the console's flows against the real identity service, audit log and swtpm."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar, cast

import pytest
from textual.containers import VerticalScroll
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import Input, Static

from appliance.audit.records import AuditEvent
from appliance.console import ConsoleApp, ConsoleBackends, create_app
from appliance.console.screens.dashboard import PANELS, DashboardScreen
from appliance.console.screens.login import LoginScreen
from appliance.runtime import Runtime
from tests.conftest import broken_trail
from tests.console.conftest import ADMIN_PASSWORD, EMERGENCY_PASSWORD

S = TypeVar("S", bound=Screen[None])

SIZE = (120, 40)


def drive(app: ConsoleApp, scenario: Callable[[Pilot[None]], Awaitable[None]]) -> None:
    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await scenario(pilot)
            await settle(pilot)

    asyncio.run(main())


async def settle(pilot: Pilot[None]) -> None:
    """Let the login or health worker finish and its message arrive."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def log_in(pilot: Pilot[None], user: str, password: str, reason: str = "") -> None:
    screen = pilot.app.screen
    screen.query_one("#user", Input).value = user
    screen.query_one("#password", Input).value = password
    if reason:
        await pilot.click("#emergency")
        screen.query_one("#reason", Input).value = reason
    await pilot.click("#login")
    await settle(pilot)


def showing(pilot: Pilot[None], kind: type[Screen[None]]) -> bool:
    return isinstance(pilot.app.screen, kind)


async def open_screen(pilot: Pilot[None], key: str, kind: type[S]) -> S:
    """Log in as the admin, press ``key`` on the dashboard, and return the screen it opens."""
    await log_in(pilot, "alice", ADMIN_PASSWORD)
    await settle(pilot)
    await pilot.press(key)
    await settle(pilot)
    assert showing(pilot, kind)
    return cast(S, pilot.app.screen)


def text(pilot: Pilot[None], selector: str) -> str:
    return str(pilot.app.screen.query_one(selector, Static).render())


def test_wrong_password_shows_the_error_and_hint(backends: ConsoleBackends) -> None:
    async def scenario(pilot: Pilot[None]) -> None:
        await log_in(pilot, "alice", "not the password")
        assert showing(pilot, LoginScreen)
        error = text(pilot, "#error")
        assert "wrong password" in error
        assert "failures the account is locked" in error  # the appliance error's hint
        assert pilot.app.screen.query_one("#password", Input).value == ""

    drive(create_app(backends), scenario)


def test_login_reaches_the_dashboard_with_tpm_and_models(backends: ConsoleBackends) -> None:
    async def scenario(pilot: Pilot[None]) -> None:
        await log_in(pilot, "alice", ADMIN_PASSWORD)
        assert showing(pilot, DashboardScreen)
        await settle(pilot)
        assert "TPM:" in text(pilot, "#trust")
        assert "enrolled: yes" in text(pilot, "#trust")
        assert "unseals" in text(pilot, "#trust")
        assert "no models installed" in text(pilot, "#models")
        assert "appliance update install" in text(pilot, "#models")  # the action to take
        assert "login" in text(pilot, "#audit")
        assert pilot.app.screen.query_one("#banner").has_class("hidden")

    drive(create_app(backends), scenario)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["serial-80x24", "120x40"])
def test_every_panel_shows_all_it_says_on_a_small_screen(
    backends: ConsoleBackends, size: tuple[int, int]
) -> None:
    """On a serial line's 80 x 24 a problem and its action must not be cut off at a panel's
    edge (they were, below the summary's "in red below"): each panel is as tall as its text,
    and the keys scroll the dashboard to any of them."""

    async def scenario(pilot: Pilot[None]) -> None:
        await log_in(pilot, "alice", ADMIN_PASSWORD)
        await settle(pilot)
        # This machine has no TPM device: an error in the Trust panel, named by the summary.
        assert "(TPM)" in text(pilot, "#summary")
        screen = pilot.app.screen
        for key in (*PANELS, "system-text"):
            panel = screen.query_one(f"#{key}", Static)
            inner = panel.content_size
            needed = panel.get_content_height(inner, pilot.app.size, inner.width)
            assert inner.height >= needed, f"{key}: {needed} lines of text, {inner.height} shown"
        scroll = screen.query_one("#panels-scroll", VerticalScroll)
        await pilot.press("end")
        await pilot.pause()
        assert scroll.scroll_y == scroll.max_scroll_y
        assert (scroll.max_scroll_y > 0) == (size == (80, 24))  # 120 x 40 holds it all

    async def main() -> None:
        async with create_app(backends).run_test(size=size) as pilot:
            await scenario(pilot)

    asyncio.run(main())


def test_the_health_check_looks_at_the_tpm_the_box_is_configured_with(
    backends: ConsoleBackends, runtime: Runtime
) -> None:
    """The box's TPM is the test's swtpm, named with tcti: the hardware check reports that one,
    not a missing /dev/tpmrm0 with an embedded swtpm standing in."""
    tcti = runtime.config.tcti
    assert tcti is not None
    [tpm] = [p for p in backends.health().problems if p.subject == "TPM"]
    assert f"the configured TPM {tcti} is not a device node" in tpm.message
    assert "--tcti" in tpm.action


def test_break_glass_needs_a_reason_and_shows_the_banner(
    backends: ConsoleBackends, runtime: Runtime
) -> None:
    async def scenario(pilot: Pilot[None]) -> None:
        await log_in(pilot, "er-doc", EMERGENCY_PASSWORD)
        assert showing(pilot, LoginScreen)
        assert "needs a reason" in text(pilot, "#error")
        assert not pilot.app.screen.query_one("#reason").has_class("hidden")
        pilot.app.screen.query_one("#reason", Input).value = "ED, PACS down"
        await pilot.click("#login")
        await settle(pilot)
        assert showing(pilot, DashboardScreen)
        await settle(pilot)
        assert "BREAK-GLASS SESSION" in text(pilot, "#banner")

    drive(create_app(backends), scenario)
    flagged = [r for r in runtime.audit.records() if r.event is AuditEvent.BREAK_GLASS]
    assert [r.detail["reason"] for r in flagged] == ["ED, PACS down"]


def test_unreviewed_break_glass_shows_the_banner_to_the_next_user(
    backends: ConsoleBackends, runtime: Runtime
) -> None:
    runtime.identity.login("er-doc", EMERGENCY_PASSWORD, reason="night shift, RIS down")

    async def scenario(pilot: Pilot[None]) -> None:
        await log_in(pilot, "alice", ADMIN_PASSWORD)
        await settle(pilot)
        assert "1 emergency access use(s) not yet reviewed" in text(pilot, "#banner")
        assert "ack-break-glass" in text(pilot, "#audit")

    drive(create_app(backends), scenario)


@pytest.mark.parametrize("trail", ["working", "failing"])
def test_idle_session_is_logged_off_and_audited(
    backends: ConsoleBackends, runtime: Runtime, trail: str
) -> None:
    # The idle clock is the test's (ConsoleBackends.clock is there for this): a loaded machine
    # must not log the session off before the test looks, and the test needs no long sleep.
    # With a failing trail the session ends all the same (identity's _taken_away): the console
    # says what the trail missed instead of dying on the error.
    now = [1000.0]
    app = create_app(dataclasses.replace(backends, idle_timeout=5.0, clock=lambda: now[0]))

    async def scenario(pilot: Pilot[None]) -> None:
        await log_in(pilot, "alice", ADMIN_PASSWORD)
        assert showing(pilot, DashboardScreen)
        session = app.principal.session_id if app.principal else ""
        await settle(pilot)
        with broken_trail(runtime) if trail == "failing" else contextlib.nullcontext():
            now[0] += 5.0  # five seconds without a key or mouse event
            await pilot.pause(1.5)  # the idle check runs every second
        assert showing(pilot, LoginScreen)
        notice = text(pilot, "#notice")
        assert "logged off after 5 s idle" in notice
        logouts = [r for r in runtime.audit.records() if r.event is AuditEvent.LOGOUT]
        if trail == "failing":
            assert "session of alice is ended, but the audit trail could not record it" in notice
            assert session not in [r.detail["session"] for r in logouts]
            return
        assert logouts[-1].actor == "alice"
        assert logouts[-1].detail["session"] == session
        assert logouts[-1].detail["why"] == "idle"  # automatic logoff, on the record

    drive(app, scenario)
    assert app.principal is None and app.return_code is None  # the console still runs


def test_activity_keeps_the_session_open(backends: ConsoleBackends) -> None:
    # Keys every 0.3 s for 2.4 s against a 1.5 s timeout: a loaded machine may stall the event
    # loop for a while; 1.2 s of slack keeps the test about activity, not about scheduling.
    app = create_app(dataclasses.replace(backends, idle_timeout=1.5))

    async def scenario(pilot: Pilot[None]) -> None:
        await log_in(pilot, "alice", ADMIN_PASSWORD)
        await settle(pilot)
        for _ in range(8):
            await pilot.pause(0.3)
            await pilot.press("down")
        assert showing(pilot, DashboardScreen)

    drive(app, scenario)


def test_dashboard_screenshot_exports_svg_and_png(
    backends: ConsoleBackends, tmp_path: Path
) -> None:
    import shutil
    import subprocess

    import pytest

    app = create_app(backends)
    svg: list[str] = []

    async def scenario(pilot: Pilot[None]) -> None:
        await log_in(pilot, "alice", ADMIN_PASSWORD)
        await settle(pilot)
        svg.append(app.export_screenshot(title="Appliance console"))

    drive(app, scenario)
    path = tmp_path / "dashboard.svg"
    path.write_text(svg[0])
    assert "Trust" in svg[0]
    rsvg = shutil.which("rsvg-convert")
    if rsvg is None:
        pytest.skip("rsvg-convert is not installed (apt install librsvg2-bin): no PNG")
    png = tmp_path / "dashboard.png"
    subprocess.run([rsvg, "-o", str(png), str(path)], check=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
