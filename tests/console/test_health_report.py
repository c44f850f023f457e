"""The dashboard's health report action: a TPM-signed report on the USB stick that the vendor's
checker verifies (a clinician may not export it: test_permissions.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from textual.pilot import Pilot

from appliance.console import ConsoleBackends, create_app
from provisioning.report import verify_report
from tests.console.conftest import ADMIN_PASSWORD
from tests.console.test_console import drive, log_in, settle


def test_admin_exports_a_report_the_vendor_verifies(
    backends: ConsoleBackends, tmp_path: Path
) -> None:
    app = create_app(dataclasses.replace(backends, usb_dir=tmp_path))

    async def scenario(pilot: Pilot[None]) -> None:
        await log_in(pilot, "alice", ADMIN_PASSWORD)
        await settle(pilot)
        await pilot.press("h")
        await pilot.pause()
        await pilot.click("#yes")
        await settle(pilot)
        assert any("Health report written" in (n.title or "") for n in app._notifications)

    drive(app, scenario)
    (path,) = tmp_path.glob("health-*.json")
    doc = json.loads(path.read_bytes())
    assert all(c.ok for c in verify_report(doc, doc["quote"]["ak_fingerprint"]))
    assert doc["body"]["box"]["by"] == "alice"
