"""The update agent end to end: a vendor-signed bundle of a real OpenVINO model, a real swtpm,
the real audit log; install, validation gate, commit, rollback, and a power cut at every phase."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from appliance.audit.records import AuditEvent
from appliance.config import Config
from appliance.errors import ApplianceError
from appliance.runtime import Runtime
from appliance.store.slots import SlotName
from appliance.trust.counter import TpmCounter
from appliance.updates import load_trusted_state
from appliance.updates.agent import Phase, ProgressEvent, UpdateAgent
from appliance.updates.wiring import make_agent
from provisioning.testmodel import build_model_dir
from provisioning.vendor import build_bundle
from tests.conftest import broken_trail, run_until_ready

from .conftest import NOT_BEFORE, RepoSim, provisioned_box


@dataclass
class Box:
    config: Config
    rt: Runtime
    sim: RepoSim
    token: str

    def agent(self) -> UpdateAgent:
        return make_agent(self.rt, "tech")

    def bundle(self, version: str, *, degrade: bool = False) -> Path:
        folder = self.sim.top / "real" / version / ("bad" if degrade else "good")
        build_model_dir(folder, name="risk-demo", version=version, degrade=degrade)
        out = self.sim.out / f"risk-demo-{version}-{'bad' if degrade else 'good'}.aplbundle"
        return build_bundle(
            folder, self.sim.repo, self.sim.signers(), out, not_before=NOT_BEFORE
        ).path

    def floor(self) -> int:
        return TpmCounter(self.rt.tcti, self.config.counter_index).read()

    def active_version(self) -> str | None:
        state = self.agent().store.state("risk-demo")
        info = state.slots.get(state.active) if state.active else None
        return info.version if info else None


@pytest.fixture
def box(config: Config, sim: RepoSim) -> Iterator[Box]:
    with provisioned_box(config, sim.first_root()) as (rt, token):
        yield Box(config, rt, sim, token)


def test_signed_bundle_installs_validates_and_commits(box: Box) -> None:
    state = box.agent().install(box.bundle("1.0.0"))
    assert state.phase is Phase.DONE, state.reason
    assert "auc" in (state.reason or "")
    assert box.active_version() == "1.0.0"
    loaded = box.agent().store.load("risk-demo", box.agent()._key())
    assert b"<net" in bytes(loaded.files["model.xml"])
    events = [r.event for r in box.rt.audit.records()]
    assert AuditEvent.UPDATE_INSTALLED in events


def test_second_bundle_goes_to_the_other_slot_and_raises_the_floor(box: Box) -> None:
    first = box.agent().install(box.bundle("1.0.0"))
    second = box.agent().install(box.bundle("1.1.0"))
    assert second.phase is Phase.DONE, second.reason
    assert (first.slot, second.slot) == (SlotName.A, SlotName.B)
    assert box.active_version() == "1.1.0"
    assert box.floor() == first.bundle_version  # one step of headroom: 1.0.0 may come back


def test_validation_below_tolerance_rolls_back(box: Box) -> None:
    box.agent().install(box.bundle("1.0.0"))
    state = box.agent().install(box.bundle("2.0.0", degrade=True))
    assert state.phase is Phase.FAILURE
    assert "below the vendor's" in (state.reason or "")
    assert "the version in use, if any, stays live" in (state.reason or "")  # and what to do
    assert "appliance health report" in (state.reason or "")
    assert box.active_version() == "1.0.0"
    assert box.agent().store.state("risk-demo").slots[SlotName.B] is None
    refused = [r for r in box.rt.audit.records() if r.event is AuditEvent.UPDATE_REFUSED]
    assert refused and "below the vendor's" in str(refused[-1].detail["reason"])


def test_tampered_bundle_is_refused_and_changes_nothing(box: Box) -> None:
    box.agent().install(box.bundle("1.0.0"))
    bundle = box.bundle("1.1.0")
    with tarfile.open(bundle) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/model.bin"))
    data = bytearray(bundle.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0x40  # one bit of the weights
    bundle.write_bytes(bytes(data))
    state = box.agent().install(bundle)
    assert state.phase is Phase.FAILURE and state.reason and state.reason.startswith("refused:")
    assert box.active_version() == "1.0.0"


def test_rollback_to_the_previous_slot_counter_permitting(box: Box) -> None:
    box.agent().install(box.bundle("1.0.0"))
    box.agent().install(box.bundle("1.1.0"))
    assert box.agent().rollback_model("risk-demo") is SlotName.A
    assert box.active_version() == "1.0.0"
    box.agent().rollback_model("risk-demo")  # and forward again
    box.agent().install(box.bundle("1.2.0"))  # floor now at 1.1.0's number; 1.0.0 is gone
    assert box.agent().rollback_model("risk-demo") is SlotName.B
    assert box.active_version() == "1.1.0"
    TpmCounter(box.rt.tcti, box.config.counter_index).advance_to(box.floor() + 5)
    with pytest.raises(ApplianceError, match="below the anti-rollback floor"):
        box.agent().rollback_model("risk-demo")


def test_no_rollback_that_the_audit_trail_cannot_record(box: Box) -> None:
    # Which model reads the clinic's studies is in the trail: a rollback it cannot record (a
    # full disk, a failing one) is undone and refused, not left in force unrecorded.
    box.agent().install(box.bundle("1.0.0"))
    box.agent().install(box.bundle("1.1.0"))
    with broken_trail(box.rt), pytest.raises(ApplianceError) as refused:
        box.agent().rollback_model("risk-demo")
    not_done = "'risk-demo' was not rolled back: the audit trail could not record it: the audit"
    assert refused.value.message.startswith(not_done)
    assert box.active_version() == "1.1.0"
    assert box.agent().rollback_model("risk-demo") is SlotName.A  # the trail is back
    assert box.active_version() == "1.0.0"


def test_installed_bundles_signed_time_refuses_metadata_stale_by_it(box: Box) -> None:
    """Commit trusts the bundle's metadata: its signed not-before becomes the box's clock, so
    metadata that had expired by then is refused (the TPM counter alone would let it in)."""
    assert box.agent().install(box.bundle("1.0.0")).phase is Phase.DONE
    assert load_trusted_state(box.agent().paths.trusted).reference_time() == NOT_BEFORE
    stale = box.sim.forge(
        2, box.sim.signers(), not_before=datetime(2026, 6, 1, tzinfo=UTC),
        expires=datetime(2026, 11, 1, tzinfo=UTC),
    )  # fmt: skip
    state = box.agent().install(stale)
    assert state.phase is Phase.FAILURE, state.reason
    assert "refused: timestamp.json is expired" in (state.reason or "")
    assert box.active_version() == "1.0.0"


def _cli_install(
    box: Box, bundle: Path, crash_after: Phase | None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env |= {"APPLIANCE_CONFIG": "/nonexistent", "APPLIANCE_TOKEN": box.token}
    if crash_after:
        env["APPLIANCE_UPDATE_CRASH_AFTER"] = crash_after.value
    argv = [sys.executable, "-m", "appliance.cli", "--state-dir", str(box.config.state_dir),
            "--tcti", box.config.device_tcti(), "update", "install", str(bundle)]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)


@pytest.mark.parametrize(
    ("phase", "degrade", "expect_new"),
    [
        (Phase.VERIFY, False, False),
        (Phase.INSTALL, False, False),
        (Phase.VALIDATE, False, False),
        (Phase.COMMIT, False, True),
        (Phase.DONE, False, True),
        (Phase.ROLLBACK, True, False),
        (Phase.FAILURE, True, False),
    ],
)
def test_power_cut_at_every_phase_leaves_a_consistent_box(
    box: Box, phase: Phase, degrade: bool, expect_new: bool
) -> None:
    box.agent().install(box.bundle("1.0.0"))
    floor_before = box.floor()
    proc = _cli_install(box, box.bundle("1.1.0", degrade=degrade), crash_after=phase)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    agent = box.agent()
    state = agent.resume()  # what the next start of the agent does
    assert state.phase in (Phase.DONE, Phase.FAILURE)
    store = agent.store.state("risk-demo")
    assert box.active_version() == ("1.1.0" if expect_new else "1.0.0")
    inactive = store.slots.get(store.inactive)
    assert (inactive is not None) == expect_new, "a half-installed slot was left behind"
    agent.store.load("risk-demo", agent._key())  # whatever is active decrypts and is whole
    assert box.floor() >= floor_before
    if not expect_new:
        assert "interrupted" in (state.reason or "") or degrade
    again = box.agent().install(box.bundle("1.2.0"))  # and the box still takes updates
    assert again.phase is Phase.DONE, again.reason


def test_rollback_after_a_power_cut_in_validation_does_not_make_the_unvalidated_model_live(
    box: Box,
) -> None:
    """The cut leaves the new model whole in the inactive slot, never validated; a technician's
    `update rollback` then must not activate it: the interrupted update is undone first."""
    box.agent().install(box.bundle("1.0.0"))
    proc = _cli_install(box, box.bundle("1.1.0"), crash_after=Phase.VALIDATE)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with pytest.raises(ApplianceError, match="no previous version to roll back to"):
        box.agent().rollback_model("risk-demo")
    assert box.active_version() == "1.0.0"
    assert box.agent().state().phase is Phase.FAILURE


def test_usb_scan_installs_signed_bundles_and_refuses_the_rest(
    box: Box, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the udev-started service does with a mounted stick (here: a folder)."""
    from appliance.cli import main

    stick = tmp_path / "stick"
    stick.mkdir()
    base = ["--state-dir", str(box.config.state_dir), "--tcti", box.config.device_tcti()]
    assert main([*base, "update", "scan", str(stick)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    (stick / "a-good.aplbundle").write_bytes(box.bundle("1.0.0").read_bytes())
    (stick / "b-junk.aplbundle").write_bytes(b"not a bundle at all")
    assert main([*base, "update", "scan", str(stick)]) == 1
    out = capsys.readouterr().out
    assert "installed risk-demo 1.0.0" in out and "refused, nothing changed" in out
    assert out.count("refused") == 1, out
    assert box.active_version() == "1.0.0"
    actors = {r.actor for r in box.rt.audit.records() if r.event is AuditEvent.UPDATE_INSTALLED}
    assert actors == {"update-agent@usb"}


def test_a_refused_install_says_so_once_with_what_to_do(
    box: Box, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One verdict, not the agent's progress line and the command's line both saying it."""
    from appliance.cli import main

    junk = tmp_path / "junk.aplbundle"
    junk.write_bytes(b"not a bundle at all")
    monkeypatch.setenv("APPLIANCE_TOKEN", box.token)
    base = ["--state-dir", str(box.config.state_dir), "--tcti", box.config.device_tcti()]
    assert main([*base, "update", "install", str(junk)]) == 1
    out, err = capsys.readouterr()
    said = (out + err).replace(str(junk), "<bundle>")  # tmp_path holds this test's name
    assert said.count("refused") == 1, said
    assert out.startswith(f"update refused, nothing changed: {junk} is truncated or not a bundle")
    assert "Copy the bundle again from the vendor's medium" in out  # what to do


def test_udev_rule_starts_the_update_unit() -> None:
    image = Path(__file__).resolve().parents[2] / "image"
    rule = (image / "udev" / "90-appliance-update.rules").read_text()
    assert 'ENV{SYSTEMD_WANTS}+="appliance-update@%k.service"' in rule
    unit = (image / "units" / "appliance-update@.service").read_text()
    assert "ExecStart=/opt/appliance/bin/appliance update scan /run/appliance-usb/%i" in unit


def test_status_and_rollback_through_the_cli(
    box: Box, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from appliance.cli import main

    box.agent().install(box.bundle("1.0.0"))
    box.agent().install(box.bundle("1.1.0"))
    monkeypatch.setenv("APPLIANCE_TOKEN", box.token)
    base = ["--state-dir", str(box.config.state_dir), "--tcti", box.config.device_tcti()]
    assert main([*base, "update", "status"]) == 0
    out = capsys.readouterr().out
    assert "slot a        1.0.0" in out and "slot b active 1.1.0" in out
    assert main([*base, "update", "rollback", "risk-demo"]) == 0
    assert "slot a is active again" in capsys.readouterr().out


class _PowerCut(BaseException):
    """Stands in for the power going off: nothing after it runs, no handler catches it."""


@pytest.mark.parametrize(
    ("phase", "end", "live", "said"),
    [
        (Phase.COMMIT, Phase.DONE, "1.1.0", "risk-demo 1.1.0: its interrupted commit finished"),
        (
            Phase.VALIDATE,
            Phase.FAILURE,
            "1.0.0",
            "risk-demo 1.1.0: interrupted in validate, undone",
        ),
    ],
)
def test_appliance_run_finishes_an_update_a_power_cut_interrupted_before_it_serves(
    box: Box, phase: Phase, end: Phase, live: str, said: str
) -> None:
    """ADR 0004: an interrupted commit is finished at start, not at the next stick or status
    (till then the floor lagged the model in use); an interrupted install is undone."""
    box.agent().install(box.bundle("1.0.0"))
    proc = _cli_install(box, box.bundle("1.1.0"), crash_after=phase)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run, lines = run_until_ready(box.config.state_dir, "--tcti", box.config.device_tcti())
    run.send_signal(signal.SIGTERM)
    run.communicate(timeout=60)
    assert run.returncode == 0
    assert any(said in line for line in lines), "".join(lines)
    assert box.agent().state().phase is end
    assert box.active_version() == live


def test_power_cut_while_streaming_into_the_slot_is_undone(box: Box) -> None:
    """VERIFY writes the not yet verified bytes into the inactive slot; a cut there is undone."""
    box.agent().install(box.bundle("1.0.0"))

    def cut_mid_stream(event: ProgressEvent) -> None:
        if event.phase is Phase.VERIFY and 0 < event.done < event.total and event.total > 1:
            raise _PowerCut

    with pytest.raises(_PowerCut):
        make_agent(box.rt, "tech", cut_mid_stream).install(box.bundle("1.1.0"))
    agent = box.agent()
    recorded = agent.state()  # what the next start finds: the slot it must clear is named
    assert (recorded.phase, recorded.model, recorded.slot) == (
        Phase.VERIFY, "risk-demo", SlotName.B,
    )  # fmt: skip
    half_written = box.config.models_dir / "risk-demo" / "b"
    assert any(half_written.iterdir()), "the cut came after the first bytes were written"
    state = agent.resume()
    assert state.phase is Phase.FAILURE and "interrupted during verify" in (state.reason or "")
    assert not half_written.exists()
    assert box.active_version() == "1.0.0"
    assert box.agent().install(box.bundle("1.1.0")).phase is Phase.DONE


def test_refused_target_leaves_no_half_written_slot(box: Box) -> None:
    box.agent().install(box.bundle("1.0.0"))
    bundle = box.bundle("1.1.0")
    with tarfile.open(bundle) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/model.bin"))
    data = bytearray(bundle.read_bytes())
    data[member.offset_data + member.size - 1] ^= 0x01  # the very last byte of the weights
    bundle.write_bytes(bytes(data))
    phases: list[Phase] = []
    agent = make_agent(box.rt, "tech", lambda event: phases.append(event.phase))
    state = agent.install(bundle)
    assert state.phase is Phase.FAILURE and (state.reason or "").startswith("refused:")
    assert "hash mismatch" in (state.reason or "")
    assert Phase.INSTALL not in phases and Phase.VALIDATE not in phases
    assert not (box.config.models_dir / "risk-demo" / "b").exists()
    assert not agent.paths.pending.exists()
    assert box.active_version() == "1.0.0"
    refused = [r for r in box.rt.audit.records() if r.event is AuditEvent.UPDATE_REFUSED]
    assert refused and "hash mismatch" in str(refused[-1].detail["reason"])


def test_status_while_an_update_runs_does_not_undo_it(box: Box) -> None:
    """`appliance update status` (or the console) asks the agent to resume while another
    process installs: that is an update in progress, not one a power cut interrupted."""
    box.agent().install(box.bundle("1.0.0"))
    bundle = box.bundle("1.1.0")
    running = box.agent()
    gate, in_validate, release = running._validator, threading.Event(), threading.Event()

    def slow_gate(*args: Any) -> tuple[bool, str]:
        in_validate.set()
        release.wait(60)
        return gate(*args)

    running._validator = slow_gate
    result: list[Phase] = []
    worker = threading.Thread(target=lambda: result.append(running.install(bundle).phase))
    worker.start()
    try:
        assert in_validate.wait(60)
        seen = box.agent().resume()  # what `appliance update status` does meanwhile
        assert seen.phase is Phase.VALIDATE and seen.version == "1.1.0"
    finally:
        release.set()
        worker.join(60)
    assert result == [Phase.DONE]
    assert box.active_version() == "1.1.0"
