"""The health dashboard, refreshed every ``refresh_s`` seconds by a thread worker."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Label, Sparkline, Static

from appliance.console.backends import ConsoleBackends
from appliance.console.dialogs.confirm import ConfirmDialog
from appliance.console.health import HealthReport
from appliance.console.messages import HealthGathered, LogoffRequested, ReportExported
from appliance.console.screens.accounts import NEEDS_ROLE as NEEDS_ACCOUNTS_ROLE
from appliance.console.screens.accounts import AccountsScreen, ChangePasswordDialog, may_manage
from appliance.console.screens.audit import NEEDS_ROLE as NEEDS_AUDIT_ROLE
from appliance.console.screens.audit import AuditScreen, may_read
from appliance.console.screens.update import NEEDS_ROLE, UpdateScreen, may_install
from appliance.console.widgets import panels
from appliance.errors import ApplianceError
from appliance.identity.roles import Principal, may_enter

NEEDS_REPORT_ROLE = "Exporting the health report needs a technician or admin account."

PANELS: dict[str, tuple[str, Callable[[HealthReport], Text]]] = {
    "trust": ("Trust / TPM", panels.trust),
    "hardware": ("Hardware & devices", panels.hardware),
    "models": ("Models & slots", panels.models),
    "update": ("Last update", panels.update),
    "audit": ("Recent audit events", panels.audit),
}


class DashboardScreen(Screen[None]):
    BINDINGS = [  # noqa: RUF012 - Textual's API
        Binding("r", "refresh_now", "Refresh"),
        Binding("u", "update", "Update"),
        Binding("a", "audit", "Audit"),
        Binding("s", "accounts", "Accounts"),
        Binding("p", "password", "Password"),
        Binding("h", "health_report", "Report"),
        Binding("ctrl+l", "log_off", "Log off"),
    ]

    def __init__(self, principal: Principal, backends: ConsoleBackends) -> None:
        super().__init__()
        self.principal = principal
        self.backends = backends
        self.health = backends.health
        self.refresh_s = backends.refresh_s
        self.report: HealthReport | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="banner", classes="hidden")
        who = f"{self.principal.username} ({self.principal.role})"
        yield Static(f"Logged in as {who}", id="session")
        yield Static("Gathering health…", id="summary")
        # Each panel as tall as what it says (a problem and its action are never cut off), the
        # whole grid scrolled with the arrow and page keys where the screen is short (80 x 24).
        with VerticalScroll(id="panels-scroll"), Grid(id="panels"):
            for key, (title, _render) in PANELS.items():
                panel = Static("…", id=key, classes="panel")
                panel.border_title = title
                yield panel
            with Vertical(id="system", classes="panel") as system:
                system.border_title = "System"
                yield Static("…", id="system-text")
                yield Label("CPU %")
                yield Sparkline([], id="cpu")
                yield Label("Memory %")
                yield Sparkline([], id="memory")
        yield Footer()

    def on_mount(self) -> None:
        self._show_banner(pending=0)
        self.gather()
        self.set_interval(self.refresh_s, self.gather)

    @work(thread=True, exclusive=True, group="health")
    def gather(self) -> None:
        """Gather in a thread (TPM, OpenVINO, disk); only the message touches the screen."""
        self.post_message(HealthGathered(self.health()))

    def on_health_gathered(self, message: HealthGathered) -> None:
        report = self.report = message.report
        for key, (_title, render) in PANELS.items():
            self.query_one(f"#{key}", Static).update(render(report))
        self.query_one("#system-text", Static).update(panels.system(report))
        self.query_one("#cpu", Sparkline).data = [s.cpu_percent for s in report.system]
        self.query_one("#memory", Sparkline).data = [s.memory_percent for s in report.system]
        self.query_one("#summary", Static).update(panels.summary(report))
        self._show_banner(report.break_glass_pending)

    def _show_banner(self, pending: int) -> None:
        banner = self.query_one("#banner", Static)
        if self.principal.break_glass:
            text = "BREAK-GLASS SESSION: emergency access; every action is flagged for review"
        elif pending:
            text = f"BREAK-GLASS: {pending} emergency access use(s) not yet reviewed by an admin"
        else:
            banner.add_class("hidden")
            return
        banner.update(text)
        banner.remove_class("hidden")

    def action_refresh_now(self) -> None:
        self.gather()

    def action_update(self) -> None:
        if not may_install(self.principal):
            self.notify(NEEDS_ROLE, title="Not allowed", severity="error")
            return
        self.app.push_screen(UpdateScreen(self.principal, self.backends))

    def action_audit(self) -> None:
        if not may_read(self.principal):
            self.notify(NEEDS_AUDIT_ROLE, title="Not allowed", severity="error")
            return
        self.app.push_screen(AuditScreen(self.principal, self.backends))

    def action_accounts(self) -> None:
        if not may_manage(self.principal):
            self.notify(NEEDS_ACCOUNTS_ROLE, title="Not allowed", severity="error")
            return
        self.app.push_screen(AccountsScreen(self.principal, self.backends))

    def action_password(self) -> None:
        if not may_enter(self.principal.role, "console:password"):
            self.notify("This account has no password to change.", title="Not allowed",
                        severity="error")  # fmt: skip
            return

        def answered(change: tuple[str, str] | None) -> None:
            if change is not None:
                self.change_password(*change)

        self.app.push_screen(ChangePasswordDialog(), answered)

    @work(thread=True, exclusive=True, group="password")
    def change_password(self, current: str, password: str) -> None:
        """In a thread: checking and hashing passwords takes a moment."""
        try:
            self.backends.identity.change_password(self.principal, current, password)
        except ApplianceError as exc:
            self.app.call_from_thread(self.notify, str(exc), title="Password not changed",
                                      severity="error")  # fmt: skip
        else:
            self.app.call_from_thread(self.notify, "Your password is changed; your other "
                                      "sessions are ended.", title="Password changed")  # fmt: skip

    def action_health_report(self) -> None:
        if not may_enter(self.principal.role, "console:health report"):
            self.notify(NEEDS_REPORT_ROLE, title="Not allowed", severity="error")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.export_report()

        question = (f"Write a TPM-signed health report (devices, versions, PCRs, self-test; no "
                    f"patient data) to {self.backends.usb_dir}?")  # fmt: skip
        self.app.push_screen(ConfirmDialog(question, yes="Export"), answered)

    @work(thread=True, exclusive=True, group="report")
    def export_report(self) -> None:
        try:
            path, key = self.backends.health_export(self.principal, self.backends.usb_dir)
        except (ApplianceError, OSError) as exc:
            self.post_message(ReportExported(None, error=str(exc)))
        else:
            self.post_message(ReportExported(path, key))

    def on_report_exported(self, message: ReportExported) -> None:
        if message.path is None:
            self.notify(message.error, title="Health report not written", severity="error")
        else:
            self.notify(f"{message.path.name}, signed by attestation key "
                        f"{message.fingerprint[:16]}…", title="Health report written")  # fmt: skip

    def action_log_off(self) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.post_message(LogoffRequested())

        self.app.push_screen(ConfirmDialog("Log off?", yes="Log off"), answered)
