"""The audit view: real backends, a real swtpm, the real audit log and identity service."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import DataTable

from appliance.config import Config
from appliance.console import ConsoleBackends, create_app
from appliance.console.screens.audit import AuditScreen
from appliance.runtime import Runtime
from tests.console.conftest import EMERGENCY_PASSWORD
from tests.console.test_console import drive, open_screen, settle, text

NURSE_PASSWORD = "quiet river under green lamps"


async def open_audit(pilot: Pilot[None]) -> AuditScreen:
    return await open_screen(pilot, "a", AuditScreen)


def rows(screen: AuditScreen, selector: str) -> list[list[str]]:
    table = screen.query_one(selector, DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def verify(pilot: Pilot[None]) -> None:
    await pilot.click("#verify")
    await settle(pilot)


def test_admin_sees_the_login_and_the_filter_narrows(backends: ConsoleBackends) -> None:
    async def scenario(pilot: Pilot[None]) -> None:
        screen = await open_audit(pilot)
        events = [(r[2], r[4]) for r in rows(screen, "#records")]
        assert ("login", "alice") in events
        assert ("account-change", "alice") in events
        await pilot.click("#filter")
        await pilot.press(*"logout")
        await pilot.pause()
        assert {r[2] for r in rows(screen, "#records")} == {"logout"}

    drive(create_app(backends), scenario)


def test_verify_says_the_chain_is_intact(backends: ConsoleBackends) -> None:
    async def scenario(pilot: Pilot[None]) -> None:
        await open_audit(pilot)
        await verify(pilot)
        assert text(pilot, "#verdict").startswith("intact: ")
        assert "checkpoints" in text(pilot, "#verdict")
        assert pilot.app.screen.query_one("#verdict").has_class("ok")

    drive(create_app(backends), scenario)


def test_a_tampered_byte_is_shown_in_red(backends: ConsoleBackends, config: Config) -> None:
    async def scenario(pilot: Pilot[None]) -> None:
        await open_audit(pilot)
        # An attacker edits one byte of a record while the view is open.
        log_file = sorted(config.audit_dir.glob("audit-*.log"))[0]
        data = bytearray(log_file.read_bytes())
        data[data.index(b'"alice"') + 1] ^= 0x01
        log_file.write_bytes(bytes(data))
        await verify(pilot)
        verdict = text(pilot, "#verdict")
        assert verdict.startswith("TAMPERED OR DAMAGED")
        assert "was modified" in verdict
        assert pilot.app.screen.query_one("#verdict").has_class("refused")

    drive(create_app(backends), scenario)


def test_export_writes_json_lines_to_the_stick_and_is_audited(
    backends: ConsoleBackends, runtime: Runtime, config: Config, tmp_path: Path
) -> None:
    stick = tmp_path / "usb"
    stick.mkdir()

    async def scenario(pilot: Pilot[None]) -> None:
        await open_audit(pilot)
        await pilot.click("#export")
        await settle(pilot)
        assert text(pilot, "#export-result").startswith("exported ")
        assert pilot.app.screen.query_one("#export-result").has_class("ok")

    drive(create_app(dataclasses.replace(backends, usb_dir=stick)), scenario)
    [out] = list(stick.iterdir())
    assert out.name.startswith(f"audit-{config.box_id}-") and out.name.endswith(".jsonl")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert any(r["event"] == "login" and r["actor"] == "alice" for r in lines)
    exports = [r for r in runtime.audit.records() if r.event == "export"]
    assert exports and exports[-1].actor == "alice"


def test_admin_acknowledges_a_break_glass_use(backends: ConsoleBackends, runtime: Runtime) -> None:
    doc, _ = runtime.identity.login("er-doc", EMERGENCY_PASSWORD, reason="cardiac arrest bed 4")
    runtime.identity.logout(doc)
    assert len(runtime.identity.unacknowledged_break_glass()) == 1

    async def scenario(pilot: Pilot[None]) -> None:
        screen = await open_audit(pilot)
        [use] = rows(screen, "#break-glass")
        assert use[1] == "er-doc" and "cardiac arrest" in use[3]
        await pilot.click("#ack")
        await pilot.pause()
        await pilot.click("#yes")
        await settle(pilot)
        assert rows(screen, "#break-glass") == []

    drive(create_app(backends), scenario)
    assert runtime.identity.unacknowledged_break_glass() == []
    assert any(r.event == "break-glass-ack" for r in runtime.audit.records())
