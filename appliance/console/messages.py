"""Messages the console's workers and screens post, as dataclasses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.message import Message

from appliance.audit.log import VerifyReport
from appliance.audit.records import AuditRecord
from appliance.console.health import HealthReport
from appliance.identity.roles import Principal
from appliance.identity.store import Account, BreakGlassUse
from appliance.setup.progress import Step
from appliance.updates.agent import AgentState, ProgressEvent
from appliance.updates.preview import BundlePreview


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


@dataclass
class WorkDone(Message):
    """A wizard pane's worker finished: its result, or the appliance error's message and hint."""

    tag: str
    result: object
    error: str = ""
    hint: str = ""


@dataclass
class StepDone(Message):
    """A wizard step completed durably; the wizard records it and opens the next one."""

    step: Step
    note: str


@dataclass
class SessionOpened(Message):
    """The wizard created the first admin and logged it in (idle logoff applies from here)."""

    principal: Principal


@dataclass
class WizardFinished(Message):
    """Every step is done: the app shows the dashboard for ``principal``."""

    principal: Principal | None


@dataclass
class PreviewReady(Message):
    """The preview worker looked inside a bundle."""

    bundle: Path
    preview: BundlePreview


@dataclass
class ReportExported(Message):
    """The health report worker wrote ``path`` (signed by the key ``fingerprint``) or failed."""

    path: Path | None
    fingerprint: str = ""
    error: str = ""


@dataclass
class AccountsLoaded(Message):
    """The accounts worker read the accounts (or could not: ``error``)."""

    accounts: list[Account]
    error: str | None = None


@dataclass
class AccountChanged(Message):
    """An account change finished: what was done, or why it was refused."""

    done: str | None
    error: str | None = None
