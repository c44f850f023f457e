"""The state partition full (a real ENOSPC on a small tmpfs): refusals are clear, nothing
acknowledged is lost, and the box recovers once space is freed, without a restart."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from appliance.audit import AuditEvent
from appliance.audit import verify as audit_verify
from appliance.config import Config
from appliance.trust.swtpm import Swtpm
from tests.conftest import SmallDisk, small_disk

from .conftest import Served
from .test_api import FEATURES, v2_body

INFER = "/v2/models/risk-demo/infer"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(tmp_path / "state") as mounted:
        yield mounted


@pytest.fixture
def config(disk: SmallDisk, swtpm: Swtpm) -> Config:
    """The box's state on the small disk."""
    return Config(state_dir=disk.path, tcti=swtpm.tcti)


def _infer(http: httpx.Client) -> httpx.Response:
    return http.post(INFER, json=v2_body(FEATURES))


def _audited_requests(box: Served) -> set[str]:
    return {
        str((r.detail or {})["request_id"])
        for r in box.rt.audit.records()
        if r.event is AuditEvent.INFERENCE
    }


def test_inference_on_a_full_disk_is_refused_and_the_box_recovers(
    served: Served, disk: SmallDisk
) -> None:
    with served.client() as http:
        acknowledged = [_infer(http).headers["X-Request-Id"] for _ in range(3)]
        disk.fill()
        for _ in range(3):
            refused = _infer(http)
            assert refused.status_code == 503, refused.text
            said = refused.json()
            assert "full" in said["error"] + said["hint"], said
        disk.free()
        again = _infer(http)
        assert again.status_code == 200, again.text
        acknowledged.append(again.headers["X-Request-Id"])
        for request_id in acknowledged:
            assert http.get(f"/v1/results/{request_id}").status_code == 200
    assert set(acknowledged) <= _audited_requests(served)
    report = audit_verify(served.rt.audit.directory, served.rt.audit_key, served.rt.audit_anchor)
    assert report.ok and not report.warnings, report.problems
    for db in ("results.db", "identity.db"):
        with sqlite3.connect(disk.path / db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_token_whose_use_cannot_be_recorded_on_a_full_disk_gets_a_clear_503(
    served: Served, disk: SmallDisk
) -> None:
    """Authentication notes a token's last use (for the idle logoff) at most every 30 s: that
    write fails on a full disk, and the answer must say so (it was a bare 500)."""
    identity = served.rt.identity
    real_clock = identity.clock
    identity.clock = lambda: real_clock() + 120  # the token's last use is old enough to note
    disk.fill()
    with served.client() as http:
        refused = _infer(http)
    assert refused.status_code == 503, refused.text
    said = refused.json()
    assert "full" in said["error"] + said["hint"], said
    disk.free()
    with served.client() as http:
        assert _infer(http).status_code == 200
