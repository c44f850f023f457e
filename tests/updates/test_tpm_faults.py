"""A TPM that stops answering in the middle of an update: a real swtpm, really stopped.

The agent needs the TPM for the floor (VERIFY, COMMIT), the model-store key (VERIFY, VALIDATE)
and the audit checkpoints. Whenever it goes away the box serves one whole model (the one it
served, or the new one once COMMIT switched the slot), a half-installed slot goes, the technician
is told what happened and what to do, and once the same TPM (a swtpm restarted on its state)
answers again the update ends as it should: an install before COMMIT is retried from the stick,
a commit is finished, never undone, and the floor is where it belongs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from appliance.audit.records import AuditEvent
from appliance.config import Config
from appliance.store.slots import SlotName
from appliance.trust.swtpm import Swtpm
from appliance.updates.agent import Counter, Phase, ProgressEvent
from appliance.updates.errors import CommitPendingError
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


def installed(box: Box) -> list[str]:
    return [str(r.model) for r in box.rt.audit.records() if r.event is AuditEvent.UPDATE_INSTALLED]


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


def test_tpm_lost_before_the_floor_moves_the_commit_is_finished_when_it_returns(
    box: Box, swtpm: Swtpm
) -> None:
    old = box.bundle("1.0.0")
    box.agent().install(old)
    floor = box.floor()
    validated = stop_at(swtpm, lambda e: e.phase is Phase.VALIDATE and e.done == e.total)
    with pytest.raises(CommitPendingError) as raised:
        make_agent(box.rt, "tech", validated).install(box.bundle("1.1.0"))
    said = f"{raised.value.message} {raised.value.hint}"
    assert "risk-demo 1.1.0 passed validation but its commit did not finish" in said
    assert "cannot reach the TPM" in said
    assert "the box still runs what it ran before" in said
    assert "`appliance update status`" in said  # what to do once the TPM is back
    agent = box.agent()
    assert agent.state().phase is Phase.COMMIT
    assert box.active_version() == "1.0.0"
    # Nothing else gets in meanwhile, and it says why.
    with pytest.raises(CommitPendingError, match="risk-demo 1.1.0 passed validation"):
        agent.install(box.bundle("1.2.0"))
    swtpm.start()
    assert box.floor() == floor
    state = box.agent().resume()
    assert state.phase is Phase.DONE, state
    assert box.active_version() == "1.1.0"
    assert box.floor() == 1  # 1.0.0's bundle number: one step of headroom, as after any commit
    assert installed(box) == ["risk-demo 1.0.0", "risk-demo 1.1.0"]
    replayed = box.agent().install(old)  # the fault opened no way around the floor
    assert replayed.phase is Phase.FAILURE, replayed
    assert "not above the anti-rollback floor 1" in (replayed.reason or "")


class StopsAfterAdvance:
    """The box's real TPM counter; the TPM stops right after the floor was raised."""

    def __init__(self, counter: Counter, swtpm: Swtpm) -> None:
        self._counter = counter
        self._swtpm = swtpm

    def read(self) -> int:
        return self._counter.read()

    def advance_to(self, target: int) -> int:
        value = self._counter.advance_to(target)
        self._swtpm.stop()
        return value


def test_tpm_lost_after_the_floor_moved_the_commit_finishes_not_rolls_back(
    config: Config, sim: RepoSim, swtpm: Swtpm
) -> None:
    """Every audit record anchors a checkpoint in the TPM here (as one in a hundred does on the
    box), so the commit's own record needs it after the floor and the slot switch."""
    with provisioned_box(replace(config, audit_checkpoint_every=1), sim.first_root()) as (rt, t):
        box = Box(config, rt, sim, t)
        box.agent().install(box.bundle("1.0.0"))
        agent = box.agent()
        agent._counter = StopsAfterAdvance(agent._counter, swtpm)
        with pytest.raises(CommitPendingError) as raised:
            agent.install(box.bundle("1.1.0"))
        assert "risk-demo 1.1.0 is live" in str(raised.value)
        assert box.active_version() == "1.1.0"
        assert box.agent().state().phase is Phase.COMMIT
        swtpm.start()
        assert box.floor() == 1
        state = box.agent().resume()
        assert state.phase is Phase.DONE, state
        assert box.active_version() == "1.1.0"
        assert box.floor() == 1
        assert installed(box) == ["risk-demo 1.0.0", "risk-demo 1.1.0"]
        assert box.agent().rollback_model("risk-demo") is SlotName.A  # the floor permits it


def test_rollback_asked_while_a_commit_is_pending_goes_back_not_forward(
    box: Box, swtpm: Swtpm
) -> None:
    """A technician who meets a pending commit and asks to roll back gets the version before:
    the commit is finished first, then undone by the rollback, both audited."""
    box.agent().install(box.bundle("1.0.0"))
    validated = stop_at(swtpm, lambda e: e.phase is Phase.VALIDATE and e.done == e.total)
    with pytest.raises(CommitPendingError):
        make_agent(box.rt, "tech", validated).install(box.bundle("1.1.0"))
    swtpm.start()
    assert box.agent().rollback_model("risk-demo") is SlotName.A
    assert box.active_version() == "1.0.0"
    assert box.agent().state().phase is Phase.DONE
    assert installed(box) == ["risk-demo 1.0.0", "risk-demo 1.1.0", "risk-demo 1.0.0"]


def test_tpm_lost_when_the_refusal_is_due_a_checkpoint_the_refusal_is_still_returned(
    config: Config, sim: RepoSim, swtpm: Swtpm, caplog: pytest.LogCaptureFixture
) -> None:
    """Every record anchors a checkpoint in the TPM here, so the refusal's own audit record
    needs the TPM that made the refusal: the update ends in FAILURE all the same (on disk, the
    slot cleared), and the technician and the journal are told what the trail lacks."""
    with provisioned_box(replace(config, audit_checkpoint_every=1), sim.first_root()) as (rt, t):
        box = Box(config, rt, sim, t)
        box.agent().install(box.bundle("1.0.0"))
        bundle = box.bundle("1.1.0")
        agent = make_agent(rt, "tech", stop_at(swtpm, lambda e: e.phase is Phase.VERIFY))
        state = agent.install(bundle)
        assert state.phase is Phase.FAILURE, state
        reason = state.reason or ""
        assert reason.startswith("not installed: cannot reach the TPM"), reason
        assert "insert the stick again once the TPM answers" in reason
        assert "This refusal is not in the audit trail" in reason
        assert agent.state() == state
        assert box.active_version() == "1.0.0"
        assert not agent.paths.pending.exists()
        journal = [r for r in caplog.records if r.levelname == "ERROR"]
        assert any("the audit trail could not record it" in r.getMessage() for r in journal)
        swtpm.start()
        assert [r for r in rt.audit.records() if r.event is AuditEvent.UPDATE_REFUSED] == []
        assert box.agent().resume() == state  # nothing left to undo or to record twice
        assert box.agent().install(bundle).phase is Phase.DONE
        assert installed(box) == ["risk-demo 1.0.0", "risk-demo 1.1.0"]


def test_status_while_the_tpm_is_away_shows_the_pending_commit_the_slots_and_no_floor(
    box: Box, swtpm: Swtpm, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The technician runs `appliance update status` to find out what the box is doing, while
    the TPM that stopped the commit is still away: what can be shown is shown, the rest says
    why not, and the exit code says something is wrong."""
    from appliance.cli import main

    box.agent().install(box.bundle("1.0.0"))
    validated = stop_at(swtpm, lambda e: e.phase is Phase.VALIDATE and e.done == e.total)
    with pytest.raises(CommitPendingError):
        make_agent(box.rt, "tech", validated).install(box.bundle("1.1.0"))
    monkeypatch.setenv("APPLIANCE_TOKEN", box.token)
    base = ["--state-dir", str(box.config.state_dir), "--tcti", box.config.device_tcti()]
    assert main([*base, "update", "status"]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("last update:  commit risk-demo 1.1.0"), out
    pending = [line for line in lines if "commit did not finish" in line]
    assert len(pending) == 1, out  # one line: what, why, what to do
    assert "risk-demo 1.1.0 passed validation but its commit did not finish" in pending[0]
    assert "cannot reach the TPM" in pending[0]
    assert "`appliance update status` finishes the commit" in pending[0]
    assert "floor:        unknown (TPM not answering: cannot reach the TPM" in out
    assert "slot a active 1.0.0 (bundle 1)" in out and "slot b        1.1.0 (bundle 2)" in out
    assert "appliance: error" not in err  # shown as status, not as a failed command
    swtpm.start()  # back: the same command finishes the commit
    assert main([*base, "update", "status"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("last update:  done risk-demo 1.1.0"), out
    assert "floor:        1" in out and "slot b active 1.1.0" in out
