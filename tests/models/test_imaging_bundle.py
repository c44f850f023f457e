"""The committed imaging model goes through the box's update channel like any vendor bundle:
signed with test vendor keys, installed by the real agent on a real swtpm, validated by the gate
on the CPU, committed."""

from __future__ import annotations

import json
from pathlib import Path

from appliance.audit.records import AuditEvent
from appliance.config import Config
from appliance.updates.agent import Phase
from appliance.updates.wiring import make_agent
from provisioning.vendor import build_bundle
from tests.updates.conftest import NOT_BEFORE, RepoSim, provisioned_box

from .imaging import FOLDER


def test_imaging_bundle_installs_validates_and_commits(config: Config, tmp_path: Path) -> None:
    sim = RepoSim(tmp_path / "vendor")
    bundle = build_bundle(
        FOLDER, sim.repo, sim.signers(), sim.out / "imaging.aplbundle", not_before=NOT_BEFORE
    ).path
    with provisioned_box(config, sim.first_root()) as (rt, _):
        agent = make_agent(rt, "tech")
        state = agent.install(bundle)
        assert state.phase is Phase.DONE, state.reason
        assert state.reason and "auc" in state.reason and "meets" in state.reason
        active = agent.store.state("imaging-anomaly")
        assert active.active is not None
        version = json.loads((FOLDER / "manifest.json").read_text())["version"]
        assert active.slots[active.active].version == version  # type: ignore[union-attr]
        events = [r.event for r in rt.audit.records()]
        assert AuditEvent.UPDATE_INSTALLED in events
