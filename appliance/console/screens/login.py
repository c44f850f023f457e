"""Log in with a named account; break-glass (emergency access) asks for a reason, marked red."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Input, Static

from appliance.console.backends import Identity
from appliance.console.messages import LoginFailed, LoginSucceeded
from appliance.errors import AccountError, ApplianceError

EMERGENCY = (
    "EMERGENCY ACCESS (break-glass): the login and every action are flagged on the audit trail "
    "for an admin's review. Say why."
)


class LoginScreen(Screen[None]):
    def __init__(self, identity: Identity, notice: str = "") -> None:
        super().__init__()
        self.identity = identity
        self.notice = notice

    def compose(self) -> ComposeResult:
        with Vertical(id="login-box"):
            yield Static("Appliance console", id="login-title")
            yield Static(self.notice, id="notice", classes="" if self.notice else "hidden")
            yield Input(placeholder="user name", id="user")
            yield Input(placeholder="password", password=True, id="password")
            yield Static(EMERGENCY, id="emergency-note", classes="hidden")
            yield Input(placeholder="reason for emergency access", id="reason", classes="hidden")
            with Horizontal(classes="buttons"):
                yield Button("Log in", variant="primary", id="login")
                yield Button("Emergency access", variant="error", id="emergency")
            yield Static("", id="error", classes="hidden")

    def on_mount(self) -> None:
        self.query_one("#user", Input).focus()

    def show_emergency(self) -> None:
        self.add_class("emergency")
        for widget in ("#emergency-note", "#reason"):
            self.query_one(widget).remove_class("hidden")
        self.query_one("#reason", Input).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "emergency":
            self.show_emergency()
        else:
            self.submit()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "user":
            self.query_one("#password", Input).focus()
        else:
            self.submit()

    def submit(self) -> None:
        user = self.query_one("#user", Input).value.strip()
        password = self.query_one("#password", Input).value
        reason = self.query_one("#reason", Input).value.strip() or None
        self.query_one("#error").add_class("hidden")
        self.query_one("#login", Button).disabled = True
        self.log_in(user, password, reason)

    @work(thread=True, exclusive=True, group="login")
    def log_in(self, user: str, password: str, reason: str | None) -> None:
        """Password hashing is slow on purpose: off the UI thread; the result comes back by
        message."""
        try:
            principal, _token = self.identity.login(user, password, reason=reason)
        except ApplianceError as exc:
            needs_reason = isinstance(exc, AccountError) and "break-glass" in exc.message
            self.post_message(LoginFailed(exc.message, exc.hint or "", needs_reason))
        else:
            self.post_message(LoginSucceeded(principal))

    def on_login_failed(self, message: LoginFailed) -> None:
        message.stop()
        error = self.query_one("#error", Static)
        error.update(f"{message.message}\n{message.hint}".strip())
        error.remove_class("hidden")
        self.query_one("#login", Button).disabled = False
        password = self.query_one("#password", Input)
        if message.needs_reason:
            self.show_emergency()
        else:
            password.value = ""
            password.focus()
