"""Snapshot of the login screen (no clock, PID or path on it, so it is stable)."""

from __future__ import annotations

from typing import Any

from appliance.console import ConsoleBackends, create_app


def test_login_screen(snap_compare: Any, backends: ConsoleBackends) -> None:
    assert snap_compare(create_app(backends), terminal_size=(100, 30))
