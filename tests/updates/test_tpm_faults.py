"""A TPM that stops answering in the middle of an update: a real swtpm, really stopped.

The agent needs the TPM for the floor (VERIFY, COMMIT), the model-store key (VERIFY, VALIDATE)
and the audit checkpoints. Whenever it goes away the box keeps serving the model it served, a
half-installed slot goes, the technician is told what happened and what to do, and once the same
TPM (a swtpm restarted on its state) answers again the update ends as it should: an install
before COMMIT is retried from the stick, a commit is finished, never undone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from appliance.audit.records import AuditEvent
from appliance.config import Config
from appliance.store.slots import SlotName
from appliance.trust.swtpm import Swtpm
from appliance.updates.agent import Phase, ProgressEvent
from appliance.updates.wiring import make_agent

from .conftest import RepoSim, provisioned_box
from .test_agent import Box


@pytest.fixture
def box(config: Config, sim: RepoSim) -> Iterator[Box]:
    with provisioned_box(config, sim.first_root()) as (rt, token):
        yield Box(config, rt, sim, token)


def stop_at(swtpm: Swtpm, when: Callable[[ProgressEvent], bool]) -> Callable[[ProgressEvent], None]:
    """A progress hook that stops the TPM (orderly: TPM2_Shutdown, then SIGTERM) at the first
    event ``when`` picks: from then on every TPM connection of the agent is refused."""

    def hook(event: ProgressEvent) -> None:
        if swtpm.accepts() and when(event):
            swtpm.stop()

    return hook


@pytest.mark.parametrize(
    "at",
    [
        # VERIFY's first report comes before the floor is read and the model key unsealed.
        pytest.param(Phase.VERIFY, id="before-the-floor-is-read"),
        # INSTALL's report comes once the slot is complete; VALIDATE then unseals the key to
        # read it back, and the slot would stay behind, whole and unvalidated.
        pytest.param(Phase.INSTALL, id="before-validation-reads-the-slot"),
    ],
)
def test_tpm_lost_during_install_ends_in_failure(box: Box, swtpm: Swtpm, at: Phase) -> None:
    box.agent().install(box.bundle("1.0.0"))
    bundle = box.bundle("1.1.0")
    agent = make_agent(box.rt, "tech", stop_at(swtpm, lambda e: e.phase is at))
    state = agent.install(bundle)
    assert state.phase is Phase.FAILURE, state
    # Not "refused": the bundle is fine, the technician is to retry it, not to throw it away.
    assert (state.reason or "").startswith("not installed: cannot reach the TPM"), state.reason
    assert "insert the stick again once the TPM answers" in (state.reason or "")
    assert agent.state() == state
    assert box.active_version() == "1.0.0"
    assert agent.store.state("risk-demo").slots[SlotName.B] is None  # what this update wrote
    assert not (box.config.models_dir / "risk-demo" / "b").exists()
    assert not agent.paths.pending.exists()
    refused = [r for r in box.rt.audit.records() if r.event is AuditEvent.UPDATE_REFUSED]
    assert refused and "cannot reach the TPM" in str(refused[-1].detail["reason"])
    swtpm.start()
    assert box.agent().resume() == state  # nothing to undo, no "power cut" made up
    assert box.agent().install(bundle).phase is Phase.DONE
    assert box.active_version() == "1.1.0"
