"""The console app: the first-boot wizard, login, automatic logoff after idle time, the dashboard.

Built by :func:`create_app` from its backends; ``appliance console`` hands it the real ones.
While the box has no account the wizard opens instead of the login; once one exists, an
unfinished wizard resumes after a technician's or admin's login.
Any key or mouse event resets the idle timer; after ``idle_timeout`` seconds the session is
logged off through the identity service (audited) and the login screen returns with a notice.
"""

from __future__ import annotations

from textual import events
from textual.app import App
from textual.binding import Binding

from appliance.console.backends import ConsoleBackends
from appliance.console.messages import (
    LoginSucceeded,
    LogoffRequested,
    SessionOpened,
    WizardFinished,
)
from appliance.console.screens.dashboard import DashboardScreen
from appliance.console.screens.login import LoginScreen
from appliance.console.wizard.screen import WizardScreen
from appliance.errors import ApplianceError
from appliance.identity.roles import Principal, may_enter

_ACTIVITY = (events.Key, events.MouseDown, events.MouseMove, events.MouseScrollDown,
             events.MouseScrollUp, events.Paste)  # fmt: skip


class ConsoleApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "Appliance console"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]  # noqa: RUF012 - Textual's API
    ENABLE_COMMAND_PALETTE = False

    def __init__(self, backends: ConsoleBackends) -> None:
        super().__init__()
        self.backends = backends
        self.principal: Principal | None = None
        self.last_activity = backends.clock()

    def on_mount(self) -> None:
        prov = self.backends.provisioning
        if prov is not None and prov.wizard_pending() and prov.needs_admin():
            self.push_screen(WizardScreen(self.backends, None))  # first boot: nobody to log in
        else:
            self.push_screen(LoginScreen(self.backends.identity))
        self.set_interval(min(1.0, self.backends.idle_timeout / 5), self.log_off_if_idle)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, _ACTIVITY):
            self.last_activity = self.backends.clock()
        await super().on_event(event)

    def on_login_succeeded(self, message: LoginSucceeded) -> None:
        self.principal = message.principal
        self.last_activity = self.backends.clock()
        prov = self.backends.provisioning
        may_provision = may_enter(message.principal.role, "console:provision")
        if prov is not None and may_provision and prov.wizard_pending():
            self.switch_screen(WizardScreen(self.backends, message.principal))  # resume it
        else:
            self.switch_screen(DashboardScreen(message.principal, self.backends))

    def on_session_opened(self, message: SessionOpened) -> None:
        self.principal = message.principal
        self.last_activity = self.backends.clock()

    def on_wizard_finished(self, message: WizardFinished) -> None:
        if message.principal is None:
            self.switch_screen(LoginScreen(self.backends.identity))
        else:
            self.switch_screen(DashboardScreen(message.principal, self.backends))

    def on_logoff_requested(self, _message: LogoffRequested) -> None:
        self.log_off("You logged off.")

    def log_off_if_idle(self) -> None:
        idle = self.backends.clock() - self.last_activity
        if self.principal is not None and idle >= self.backends.idle_timeout:
            notice = f"You were logged off after {_duration(self.backends.idle_timeout)} idle."
            self.log_off(notice, why="idle")

    def log_off(self, notice: str, why: str = "logout") -> None:
        """End the session (the identity service audits it, with ``why``) and show the login."""
        if self.principal is None:
            return
        principal, self.principal = self.principal, None
        try:
            self.backends.identity.logout(principal, why)
        except ApplianceError as exc:  # shown, not raised: a raise would end the console
            notice = f"{notice} {exc}".strip()
        self.switch_screen(LoginScreen(self.backends.identity, notice=notice))

    async def action_quit(self) -> None:
        self.log_off("")
        self.exit()


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"  # noqa: PLR2004


def create_app(backends: ConsoleBackends) -> ConsoleApp:
    """The console app over ``backends`` (see :func:`appliance.console.backends.from_runtime`)."""
    return ConsoleApp(backends)
