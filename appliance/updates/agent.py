"""The update agent: one bundle through Verify, Install, Validate, then Commit or Rollback.

An explicit state machine (Mender's names) whose state is persisted atomically before each
phase's work starts, so that after a power cut the next start knows where it stopped:

    IDLE -> VERIFY -> INSTALL -> VALIDATE -> COMMIT -> DONE
               |          |          +----> ROLLBACK -> FAILURE
               +----------+-----------------------------^

What each phase covers (the bundle is read once, so Mender's Download does the heavy lifting):

* VERIFY: the metadata (signatures, bundle number above the floor, signed time, layout); then the
  agent records the model and its inactive slot in ``agent.json``, clears that slot and streams
  every target into it while hashing it: each buffer is encrypted into the slot's files as it is
  read, and checked against the signed length and hash as the target ends; the manifest is
  checked against this box. A refusal here clears the slot (through ROLLBACK once it was
  written) and ends in FAILURE with a reason starting "refused:".
* INSTALL: makes the slot complete: every file fsynced once, then ``slot.json``; stages the
  verified metadata for COMMIT.
* VALIDATE, COMMIT, ROLLBACK: as the names say (below, and ADR 0004).

Before COMMIT nothing the box runs has changed: the new model is only in the inactive slot, which
counts as unfinished until INSTALL writes its ``slot.json``, so an interrupted run is undone (the
recorded slot cleared). That also means a bundle refused in VERIFY, or a stick pulled while it is
read, costs the inactive slot the previous version it held, as a failed validation always did.
COMMIT's steps are idempotent (the slot switch is one atomic rename, the TPM counter only moves up
to a target, the trusted metadata is rewritten), so an interrupted commit is finished. The box
therefore always runs either the old or the new model. A TPM that stops answering follows the
same line: before COMMIT the update ends in FAILURE ("not installed: ...", slot cleared, retry
from the stick); in COMMIT it stays pending (CommitPendingError) until the TPM answers again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from appliance.audit.auditor import Auditor
from appliance.audit.records import AuditEvent, Outcome
from appliance.errors import ApplianceError, StorageError, TrustError
from appliance.fsutil import atomic_write
from appliance.store.slots import ModelStore, SlotName, SlotWriter
from appliance.updates import reasons
from appliance.updates.errors import TransitionError
from appliance.updates.lock import agent_lock
from appliance.updates.manifest import BoxProfile, Manifest
from appliance.updates.sink import SlotSink
from appliance.updates.verify import (
    TrustedState,
    VerifiedBundle,
    load_trusted_state,
    save_trusted_state,
    verify_bundle,
)

log = logging.getLogger(__name__)


class Phase(StrEnum):
    IDLE = "idle"
    VERIFY = "verify"  # Mender's Download: the bundle is read (from USB) and verified
    INSTALL = "install"
    VALIDATE = "validate"
    COMMIT = "commit"
    ROLLBACK = "rollback"
    FAILURE = "failure"
    DONE = "done"


TRANSITIONS: Mapping[Phase, frozenset[Phase]] = {
    Phase.IDLE: frozenset({Phase.VERIFY}),
    Phase.VERIFY: frozenset({Phase.INSTALL, Phase.FAILURE, Phase.ROLLBACK}),
    Phase.INSTALL: frozenset({Phase.VALIDATE, Phase.ROLLBACK}),
    Phase.VALIDATE: frozenset({Phase.COMMIT, Phase.ROLLBACK}),
    Phase.COMMIT: frozenset({Phase.DONE}),
    Phase.ROLLBACK: frozenset({Phase.FAILURE}),
    Phase.FAILURE: frozenset({Phase.VERIFY, Phase.IDLE}),
    Phase.DONE: frozenset({Phase.VERIFY, Phase.IDLE}),
}
UNDO_ON_RESUME = frozenset({Phase.VERIFY, Phase.INSTALL, Phase.VALIDATE, Phase.ROLLBACK})


@dataclass(frozen=True)
class AgentState:
    """What the agent is doing, persisted as ``updates/agent.json``."""

    phase: Phase = Phase.IDLE
    bundle: str | None = None
    bundle_sha256: str | None = None
    model: str | None = None
    version: str | None = None
    bundle_version: int | None = None
    slot: SlotName | None = None
    reason: str | None = None
    updated: float = 0.0

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes) -> AgentState:
        doc = json.loads(data)
        doc["phase"] = Phase(doc["phase"])
        doc["slot"] = SlotName(doc["slot"]) if doc.get("slot") else None
        return cls(**doc)


@dataclass(frozen=True)
class ProgressEvent:
    """For the console's progress bar: the phase, bytes or cases done of a total, a sentence."""

    phase: Phase
    done: int
    total: int
    message: str


class Validator(Protocol):
    """Runs the signed reference set on this box's device; appliance.updates.validate does it."""

    def __call__(
        self,
        manifest: Manifest,
        files: Mapping[str, bytes | bytearray],
        progress: Callable[[int, int], None],
    ) -> tuple[bool, str]: ...  # fmt: skip


class Counter(Protocol):
    """The anti-rollback floor (the TPM NV counter, through short connections)."""

    def read(self) -> int: ...

    def advance_to(self, target: int) -> int: ...


@dataclass(frozen=True)
class AgentPaths:
    updates: Path  # agent.json, trusted/ and pending/
    models: Path  # the model store root

    @property
    def trusted(self) -> Path:
        return self.updates / "trusted"

    @property
    def pending(self) -> Path:
        return self.updates / "pending"

    @property
    def state(self) -> Path:
        return self.updates / "agent.json"


class UpdateAgent:
    """Runs bundles through the state machine; every collaborator is passed in."""

    def __init__(
        self,
        paths: AgentPaths,
        *,
        key: Callable[[], bytes],
        counter: Counter,
        audit: Auditor,
        validator: Validator,
        box: BoxProfile,
        actor: str,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        crash_after: Phase | None = None,
    ) -> None:
        self.paths = paths
        self.store = ModelStore(paths.models)
        self._key = key
        self._counter = counter
        self._audit = audit
        self._validator = validator
        self._box = box
        self._actor = actor
        self._on_progress = on_progress or (lambda _event: None)
        # Fault injection for the power-cut tests: SIGKILL right after persisting this phase.
        self._crash_after = crash_after

    # --- persisted state ------------------------------------------------------------------

    def state(self) -> AgentState:
        return read_state(self.paths)

    def _enter(self, state: AgentState, phase: Phase, **changes: object) -> AgentState:
        if phase not in TRANSITIONS[state.phase]:
            raise TransitionError(f"update agent: no transition from {state.phase} to {phase}.")
        new = self._record(state, phase=phase, **changes)
        log.info("update: %s -> %s", state.phase, phase)
        if self._crash_after is phase:
            os.kill(os.getpid(), signal.SIGKILL)
        return new

    def _record(self, state: AgentState, **changes: object) -> AgentState:
        """Persist ``state`` with ``changes`` (within a phase, or as _enter's transition)."""
        new = replace(state, updated=time.time(), **changes)  # type: ignore[arg-type]
        atomic_write(self.paths.state, new.to_json())
        return new

    def _progress(self, phase: Phase, done: int, total: int, message: str) -> None:
        self._on_progress(ProgressEvent(phase, done, total, message))

    # --- one bundle -----------------------------------------------------------------------

    def _exclusive(self, *, wait: bool) -> contextlib.AbstractContextManager[bool]:
        """Hold ``updates/agent.lock``: one agent (CLI, USB service, console) works at a time.

        Yields False, without the lock, when ``wait`` is off and another process holds it.
        """

        def waiting() -> None:
            self._progress(Phase.IDLE, 0, 1, "waiting for the update already running")

        return agent_lock(self.paths.updates, wait=wait, waiting=waiting)

    def install(self, bundle: Path) -> AgentState:
        """Take ``bundle`` through the whole machine; returns the final state (DONE or FAILURE).

        Waits for an update another process runs. Refusals are not raised: they end in FAILURE
        with the reason, audited; so does a disk that cannot take the slot (full or failing), or
        a TPM that stops answering before COMMIT, whose slot is cleared; one the audit trail
        cannot record (a checkpoint due while the TPM is away) says so in its reason. Raises
        CommitPendingError when a commit (this bundle's, or an interrupted one finished first)
        cannot finish for want of the TPM, and StorageError when storage cannot even record the
        failure.
        """
        with self._exclusive(wait=True):
            return self._install_bundle(bundle)

    def _install_bundle(self, bundle: Path) -> AgentState:
        state = self._resume()
        state = self._enter(
            state, Phase.VERIFY, bundle=str(bundle),
            bundle_sha256=None, model=None, version=None, bundle_version=None, slot=None,
            reason=None,
        )  # fmt: skip
        sink = SlotSink(state, self._start_slot)
        with contextlib.closing(sink):
            try:
                verified, digest = self._verify(bundle, sink)
            except TrustError as exc:  # the floor or the model key, not the bundle
                sink.close()
                return self._refuse(sink.state, reasons.not_installed(exc))
            except ApplianceError as exc:
                sink.close()
                return self._refuse(sink.state, f"refused: {exc}")
            try:
                state = self._enter(
                    sink.state, Phase.INSTALL, bundle_sha256=digest,
                    bundle_version=verified.version,
                )  # fmt: skip
                self._install(state, sink, verified)
            except StorageError as exc:
                # A full or failing disk while the slot is made durable: this bundle is not
                # installed, and its slot goes, so that the box gets its space back.
                sink.close()
                failed = state if state.phase is Phase.INSTALL else sink.state
                return self._rollback(failed, reasons.not_installed(exc))
        state = self._enter(state, Phase.VALIDATE)
        try:
            ok, reason = self._validate(verified.manifest, sink.slot)
        except TrustError as exc:  # the key to read the slot back, or the slot read back
            return self._rollback(state, reasons.not_installed(exc))
        if not ok:
            return self._rollback(state, reasons.not_validated(reason))
        state = self._enter(state, Phase.COMMIT, reason=reason)
        return self._commit(state)

    def _verify(self, bundle: Path, sink: SlotSink) -> tuple[VerifiedBundle, str]:
        self._progress(Phase.VERIFY, 0, 1, f"verifying {bundle.name}")
        trusted = load_trusted_state(self.paths.trusted)
        verified = verify_bundle(
            bundle, trusted, self._counter.read(), self._box, sink=sink,
            progress=lambda d, t: self._progress(Phase.VERIFY, d, t, "reading and checking files"),
        )  # fmt: skip
        # The signed timestamp pins snapshot, targets and every file's hash: its digest names
        # the bundle without a second pass over hundreds of megabytes.
        digest = hashlib.sha256(verified.trusted.timestamp or b"").hexdigest()
        self._progress(Phase.VERIFY, 1, 1, "signatures, versions, hashes and compatibility ok")
        return verified, digest

    def _start_slot(
        self, state: AgentState, name: str, version: str
    ) -> tuple[AgentState, SlotWriter]:
        """Record the model and its inactive slot, then clear it for the first target's bytes.

        Called once the metadata is verified (the name and version are signed). The key comes
        first, so a TPM refusal leaves the slot alone; recording comes before the clear, so a
        power cut from there on is undone by clearing that slot.
        """
        key = self._key()
        slot = self.store.state(name).inactive
        state = self._record(state, model=name, version=version, slot=slot)
        return state, self.store.begin_install(name, slot, key=key, version=version)

    def _install(self, state: AgentState, sink: SlotSink, verified: VerifiedBundle) -> None:
        """INSTALL: make the streamed slot durable and complete; stage the metadata for commit."""
        manifest = verified.manifest
        if sink.writer is None or (state.model, state.version) != (
            manifest.name, str(manifest.version),
        ):  # fmt: skip
            raise TransitionError("update agent: the slot written is not the verified model's.")
        sink.writer.complete(state.bundle_sha256 or "", verified.version)
        self._stage(verified)
        self._progress(
            Phase.INSTALL, 1, 1, f"{manifest.name} {manifest.version} in slot {state.slot}"
        )

    def _refuse(self, state: AgentState, reason: str) -> AgentState:
        """A refused bundle: straight to FAILURE, or through ROLLBACK once its slot was written."""
        if state.slot is None:
            return self._fail(state, reason)
        return self._rollback(state, reason)

    def _stage(self, verified: VerifiedBundle) -> None:
        """Keep the metadata to trust after commit, so that an interrupted commit can finish."""
        save_trusted_state(self.paths.pending, verified.trusted)

    def _validate(self, manifest: Manifest, slot: SlotName) -> tuple[bool, str]:
        loaded = self.store.load(manifest.name, self._key(), slot)
        return self._validator(
            manifest,
            loaded.files,
            lambda d, t: self._progress(Phase.VALIDATE, d, t, "running the reference set"),
        )

    def _commit(self, state: AgentState) -> AgentState:
        """Finish ``state``'s commit: a validated update is committed, never undone.

        Raises CommitPendingError when the TPM does not answer; the state stays COMMIT.
        """
        try:
            return self._commit_steps(state)
        except TrustError as exc:
            log.warning("update: the commit of %s %s waits for the TPM: %s",
                        state.model, state.version, exc)  # fmt: skip
            live = state.model is not None and self.store.state(state.model).active is state.slot
            raise reasons.commit_pending(f"{state.model} {state.version}", live, exc) from exc

    def _commit_steps(self, state: AgentState) -> AgentState:
        """Switch the slot, trust the new metadata, raise the floor, audit. Idempotent."""
        assert state.model and state.slot and state.bundle_version is not None  # noqa: S101
        before = self.store.state(state.model)
        previous = before.slots.get(before.active) if before.active else None
        if before.active is state.slot:  # resuming after the switch: the old one is previous
            previous = before.slots.get(before.previous) if before.previous else None
        # ADR 0004's order: trust the new metadata, raise the floor, then switch the slot.
        if self.paths.pending.joinpath("root.json").exists():
            save_trusted_state(self.paths.trusted, load_trusted_state(self.paths.pending))
        # The floor keeps one step of headroom: the model's previous slot stays allowed, so a
        # technician can roll back to it; anything older can never be installed again.
        floor = max(self._counter.read(), previous.epoch if previous else 0)
        self._counter.advance_to(floor)
        if before.active is not state.slot:
            self.store.activate(state.model, state.slot)
        self._audit.append(
            AuditEvent.UPDATE_INSTALLED, actor=self._actor, outcome=Outcome.SUCCESS,
            model=f"{state.model} {state.version}",
            detail={"bundle_version": state.bundle_version, "slot": str(state.slot),
                    "sha256": state.bundle_sha256 or "", "validation": state.reason or ""},
        )  # fmt: skip
        _remove_tree(self.paths.pending)
        self._progress(Phase.COMMIT, 1, 1, f"{state.model} {state.version} is live")
        return self._enter(state, Phase.DONE)

    def _rollback(self, state: AgentState, reason: str) -> AgentState:
        if state.phase is not Phase.ROLLBACK:  # resuming an interrupted rollback: finish it
            try:
                state = self._enter(state, Phase.ROLLBACK, reason=reason)
            except StorageError:
                # The disk is full, most often with this bundle's own half-written slot: free it
                # first, or the box stays full (every request refused) until someone acts. The
                # state on disk still names the phase that wrote the slot, one that a resume
                # undoes too, so a crash meanwhile is undone all the same.
                self._undo(state)
                state = self._enter(state, Phase.ROLLBACK, reason=reason)
        self._undo(state)
        return self._fail(state, reason)

    def _undo(self, state: AgentState) -> None:
        """Clear the slot this update wrote (never the active one) and its staged metadata."""
        if state.model and state.slot and self.store.state(state.model).active is not state.slot:
            self.store.clear(state.model, state.slot)
        _remove_tree(self.paths.pending)

    def _fail(self, state: AgentState, reason: str) -> AgentState:
        state = self._enter(state, Phase.FAILURE, reason=reason)
        try:
            self._audit.append(
                AuditEvent.UPDATE_REFUSED, actor=self._actor, outcome=Outcome.FAILURE,
                model=f"{state.model} {state.version}" if state.model else None,
                detail={"bundle": Path(state.bundle or "").name, "reason": reason[:500]},
            )  # fmt: skip
        except ApplianceError as exc:
            # The refusal stands (FAILURE is on disk, nothing changed); only the trail lacks it,
            # most often for a checkpoint due while the TPM is away. The journal line is the
            # record the trail misses, and the reason says so: a refusal, not a traceback.
            log.error("update: %s, but the audit trail could not record it: %s",  # noqa: TRY400
                      reason, exc.message)  # fmt: skip
            state = self._record(state, reason=reasons.unrecorded(reason, exc))
        self._progress(Phase.FAILURE, 1, 1, state.reason or reason)
        return state

    # --- after a power cut, and by hand ---------------------------------------------------

    def resume(self) -> AgentState:
        """Finish an interrupted commit or undo an interrupted install; returns the new state.

        While another process runs an update, its state is returned as is: that update is in
        progress, not interrupted.
        """
        with self._exclusive(wait=False) as mine:
            return self._resume() if mine else self.state()

    def _resume(self) -> AgentState:
        state = self.state()
        if state.phase is Phase.COMMIT:
            log.warning("update: finishing an interrupted commit (a restart, or the TPM)")
            return self._commit(state)
        if state.phase in UNDO_ON_RESUME:
            log.warning("update: undoing an update interrupted during %s", state.phase)
            reason = reasons.interrupted(state.phase)
            if state.phase is Phase.ROLLBACK and state.reason:
                reason = state.reason
            return self._rollback(state, reason)
        return state

    def rollback_model(self, model: str) -> SlotName:
        """Make the model's previous slot active again, if the anti-rollback floor permits.

        An interrupted update is finished or undone first (CommitPendingError if it cannot be).
        """
        with self._exclusive(wait=True):
            return self._rollback_model(model)

    def _rollback_model(self, model: str) -> SlotName:
        # An interrupted update first: its slot is the inactive one, which this would activate
        # (an unvalidated model, or a pending commit's instead of the version before it).
        self._resume()
        current = self.store.state(model)
        target = current.inactive
        info = current.slots.get(target)
        if current.active is None or info is None:
            raise ApplianceError(
                f"model '{model}' has no previous version to roll back to.",
                "Install the wanted version from a signed bundle instead.",
            )
        floor = self._counter.read()
        if info.epoch < floor:
            raise ApplianceError(
                f"the previous version of '{model}' ({info.version}, bundle {info.epoch}) is "
                f"below the anti-rollback floor {floor}.",
                "Ask the vendor for a signed bundle of the version you need.",
            )
        self.store.activate(model, target)
        try:
            self._audit.append(
                AuditEvent.UPDATE_INSTALLED, actor=self._actor, outcome=Outcome.SUCCESS,
                model=f"{model} {info.version}", detail={"action": "rollback", "slot": str(target)},
            )  # fmt: skip
        except ApplianceError as exc:
            # No record, no change: which model reads the clinic's studies is in the trail.
            self.store.activate(model, current.active)
            raise ApplianceError(
                f"'{model}' was not rolled back: the audit trail could not record it: "
                f"{exc.message}",
                exc.hint or "Run `appliance audit verify` and check the state partition.",
            ) from exc
        return target


def read_state(paths: AgentPaths) -> AgentState:
    """The agent's persisted state (IDLE when there is none); raises StorageError if damaged."""
    path = paths.state
    try:
        return AgentState.from_json(path.read_bytes())
    except FileNotFoundError:
        return AgentState()
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(
            f"the update agent's state {path} is damaged.",
            "Run `appliance update status`; if it persists, remove the file: the model "
            "slots themselves are consistent.",
        ) from exc


def import_vendor_root(paths: AgentPaths, root: bytes) -> TrustedState:
    """Trust the vendor's root metadata (provisioning); refused once a root is trusted."""
    if (paths.trusted / "root.json").exists():
        raise ApplianceError(
            "this box already trusts a vendor root.",
            "Root keys rotate through signed bundles; a new root cannot be imported by hand.",
        )
    state = TrustedState.from_root(root)
    save_trusted_state(paths.trusted, state)
    return state


def _remove_tree(folder: Path) -> None:
    if folder.exists():
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()
