"""Gather a :class:`HealthReport` from the real services: trust core, hardware, model store,
update agent state, audit log, systemd and the system monitor. Runs in a thread worker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from appliance import hardware
from appliance.audit.records import AuditRecord
from appliance.config import Config
from appliance.console import checks
from appliance.console.health import (
    AuditLine,
    HardwareSummary,
    HealthReport,
    KeyLine,
    Level,
    ModelSummary,
    Problem,
    SlotLine,
    TrustSummary,
)
from appliance.console.system import SystemMonitor
from appliance.errors import ApplianceError
from appliance.identity.store import BreakGlassUse
from appliance.store.slots import ModelStore
from appliance.trust import core
from appliance.trust.tpm import open_tpm
from appliance.updates.agent import AgentPaths, AgentState, read_state
from appliance.updates.lock import update_running

AUDIT_LINES = 8
AUDIT_WINDOW = timedelta(days=1)
UNITS = ("appliance.service",)
T = TypeVar("T")


class AuditReader(Protocol):
    def records(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> Iterator[AuditRecord]: ...


class BreakGlassReader(Protocol):
    def unacknowledged_break_glass(self) -> list[BreakGlassUse]: ...


@dataclass
class HealthSource:
    """Callable: each call gathers one report (and one system sample for the sparklines)."""

    config: Config
    tcti: str
    tpm_description: str
    audit: Callable[[], AuditReader]  # opened lazily: unsealing the audit key may fail
    identity: Callable[[], BreakGlassReader]
    devices: Callable[[], Sequence[str]]  # OpenVINO's available devices
    units: Sequence[str] = UNITS
    clock: Callable[[], float] = time.time
    monitor: SystemMonitor = field(init=False)

    def __post_init__(self) -> None:
        self.monitor = SystemMonitor(self.config.state_dir, clock=self.clock)

    def __call__(self) -> HealthReport:
        problems: list[Problem] = []

        def guarded(subject: str, func: Callable[[], T]) -> T | None:
            try:
                return func()
            except ApplianceError as exc:
                problems.append(Problem(Level.ERROR, subject, exc.message, exc.hint or ""))
                return None

        trust = guarded("TPM", self._trust)
        hw = guarded("hardware", lambda: self._hardware(problems))
        models = guarded("models", self._models)
        update = guarded("update", self._update)
        running = guarded("update", lambda: update_running(self.config.updates_dir))
        audit = guarded("audit", self._audit)
        pending = guarded("break-glass", lambda: len(self.identity().unacknowledged_break_glass()))
        services, encryption = checks.services(self.units), checks.disk_encryption(self.config)
        system = self.monitor.sample()
        problems += checks.trust_problems(trust) if trust else []
        problems += checks.model_problems(models) if models is not None else []
        # A lock that cannot be probed is a problem of its own, not a sign of a pending commit.
        busy = running is None or running
        problems += checks.update_problems(update, busy) if update else []
        problems += checks.break_glass_problems(pending or 0)
        problems += checks.service_problems(services)
        problems += checks.encryption_problems(encryption)
        problems += checks.system_problems(system[-1])
        problems.sort(key=lambda p: p.level is not Level.ERROR)
        return HealthReport(
            taken_at=self.clock(),
            trust=trust,
            hardware=hw,
            models=models,
            update=update,
            audit=audit,
            services=services,
            encryption=encryption[1],
            break_glass_pending=pending or 0,
            system=system,
            problems=tuple(problems),
        )

    def _trust(self) -> TrustSummary:
        with open_tpm(self.tcti) as tpm:
            state = core.state(tpm, self.config)
        return TrustSummary(
            tpm=self.tpm_description,
            enrolled=state.enrolled,
            in_lockout=state.lockout.in_lockout,
            failed_tries=state.lockout.failed_tries,
            max_tries=state.lockout.max_tries,
            pcrs=self.config.pcrs,
            keys=tuple(KeyLine(str(k.name), k.unsealable, k.differing) for k in state.keys),
            floor=state.floor,
        )

    def _hardware(self, problems: list[Problem]) -> HardwareSummary:
        detected = hardware.detect(
            None, self.config.state_dir, available=self.devices(), tcti=self.config.tcti
        )
        profile = hardware.best_profile(hardware.load_profiles(hardware.profiles_dir()), detected)
        for m in hardware.compare(profile, detected):
            level = Level.ERROR if m.severity == hardware.Severity.ERROR else Level.WARNING
            problems.append(Problem(level, m.subject, m.message, m.hint))

        def where(interactive: bool) -> str | None:
            try:
                return hardware.choose_device(
                    detected.openvino_devices, ("AUTO", "NPU"), interactive=interactive,
                    profile=profile,
                )  # fmt: skip
            except ApplianceError:
                return None

        return HardwareSummary(
            profile=profile.name,
            cpu_model=detected.cpu_model,
            devices=detected.openvino_devices,
            interactive_device=where(True),
            batch_device=where(False),
        )

    def _models(self) -> tuple[ModelSummary, ...]:
        store = ModelStore(self.config.models_dir)
        out = []
        for name in store.models():
            state = store.state(name)
            slots = tuple(
                SlotLine(str(slot), info.version if info else None, slot is state.active)
                for slot, info in sorted(state.slots.items())
            )
            out.append(ModelSummary(name, slots))
        return tuple(out)

    def _update(self) -> AgentState:
        return read_state(AgentPaths(self.config.updates_dir, self.config.models_dir))

    def _audit(self) -> tuple[AuditLine, ...]:
        since = datetime.fromtimestamp(self.clock(), UTC) - AUDIT_WINDOW
        recent = list(self.audit().records(since=since))[-AUDIT_LINES:]
        return tuple(
            AuditLine(r.time, str(r.event), r.actor, str(r.outcome), r.flagged)
            for r in reversed(recent)
        )
