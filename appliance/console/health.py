"""The health dashboard's data: one frozen :class:`HealthReport` per refresh.

Every section is gathered on its own: a section that fails (TPM unreachable, audit log damaged)
becomes a problem carrying the appliance error's message and hint, and the rest still shows.
Each :class:`Problem` says what is wrong and the action to take.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from appliance.console.system import SystemSample
from appliance.updates.agent import AgentState


class Level(StrEnum):
    ERROR = "error"  # red: the box is unsafe or will not work
    WARNING = "warning"  # yellow: works, but someone should look


@dataclass(frozen=True)
class Problem:
    level: Level
    subject: str  # "TPM", "models", "disk", ...
    message: str
    action: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.message} → {self.action}"


@dataclass(frozen=True)
class KeyLine:
    name: str
    unsealable: bool
    differing: tuple[int, ...]


@dataclass(frozen=True)
class TrustSummary:
    tpm: str  # where the TPM is: "device /dev/tpmrm0", "embedded swtpm (development only)"
    enrolled: bool
    in_lockout: bool
    failed_tries: int
    max_tries: int
    pcrs: tuple[int, ...]
    keys: tuple[KeyLine, ...]
    floor: int | None


@dataclass(frozen=True)
class HardwareSummary:
    profile: str
    cpu_model: str
    devices: tuple[str, ...]  # OpenVINO's: "CPU", "GPU.0", "NPU"
    interactive_device: str | None  # where interactive inference runs on this box
    batch_device: str | None


@dataclass(frozen=True)
class SlotLine:
    slot: str
    version: str | None  # None for an empty slot
    active: bool


@dataclass(frozen=True)
class ModelSummary:
    name: str
    slots: tuple[SlotLine, ...]

    @property
    def active_version(self) -> str | None:
        return next((s.version for s in self.slots if s.active), None)


@dataclass(frozen=True)
class AuditLine:
    time: str  # ISO-8601 UTC as recorded
    event: str
    actor: str
    outcome: str
    flagged: bool


@dataclass(frozen=True)
class ServiceLine:
    unit: str
    state: str  # systemd's ActiveState, or "unknown"


@dataclass(frozen=True)
class HealthReport:
    """Everything the dashboard shows, taken at ``taken_at``; sections are None when failed."""

    taken_at: float
    trust: TrustSummary | None
    hardware: HardwareSummary | None
    models: tuple[ModelSummary, ...] | None
    update: AgentState | None
    audit: tuple[AuditLine, ...] | None
    services: tuple[ServiceLine, ...]
    encryption: str
    break_glass_pending: int
    system: tuple[SystemSample, ...]  # recent samples, oldest first
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not any(p.level is Level.ERROR for p in self.problems)

    def problems_for(self, *subjects: str) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.subject in subjects)
