"""Messages the console's workers and screens post, as dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.message import Message

from appliance.audit.log import VerifyReport
from appliance.audit.records import AuditRecord
from appliance.console.health import HealthReport
from appliance.identity.roles import Principal
from appliance.identity.store import BreakGlassUse
from appliance.updates.agent import AgentState, ProgressEvent


@dataclass
class LoginSucceeded(Message):
    """The login worker opened a session; the app shows the dashboard."""

    principal: Principal


@dataclass
class LoginFailed(Message):
    """The login worker was refused: the appliance error's message and hint."""

    message: str
    hint: str
    needs_reason: bool  # a break-glass account logged in without a reason


@dataclass
class HealthGathered(Message):
    """The health worker finished one report."""

    report: HealthReport


@dataclass
class LogoffRequested(Message):
    """The user asked to log off (confirmed)."""


@dataclass
class UpdateProgressed(Message):
    """The install worker's agent reported a step."""

    event: ProgressEvent


@dataclass
class UpdateFinished(Message):
    """The install worker ended: the agent's final state, or the error that stopped it."""

    state: AgentState | None
    error: str = ""


@dataclass
class AuditLoaded(Message):
    """The audit worker read the newest records and the unacknowledged break-glass uses."""

    records: list[AuditRecord]
    break_glass: list[BreakGlassUse]
    error: str = ""


@dataclass
class AuditVerified(Message):
    """The verify worker checked the chain: its report, or the error that stopped it."""

    report: VerifyReport | None
    error: str = ""


@dataclass
class AuditExported(Message):
    """The export worker wrote ``count`` records to ``path``, or failed with ``error``."""

    path: Path | None
    count: int = 0
    error: str = ""
