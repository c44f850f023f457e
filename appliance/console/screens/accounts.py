"""Clinic staff accounts, for admins: every account with its role and state; add one, disable,
enable or unlock it, or reset its password.

Each change goes through the identity service in a thread worker (a password hash takes a
moment); the service checks the permission again and audits the change, and its refusal (a weak
password, the last admin, a name taken) is shown as it says it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Select, Static

from appliance.console.backends import ConsoleBackends
from appliance.console.dialogs.confirm import ConfirmDialog
from appliance.console.messages import AccountChanged, AccountsLoaded
from appliance.errors import ApplianceError, UnrecordedError
from appliance.identity.roles import Principal, Role, may_enter
from appliance.identity.store import Account

NEEDS_ROLE = "Managing accounts needs an admin account."
COLUMNS = ("account", "role", "state")
ROLES = (  # what each role is for, in the words the clinic uses
    (Role.CLINICIAN, "clinician: runs analyses, reads results"),
    (Role.TECHNICIAN, "technician: provisioning, updates, diagnosis"),
    (Role.AUDITOR, "auditor: reads and exports the audit trail"),
    (Role.ADMIN, "admin: accounts, configuration"),
    (Role.BREAK_GLASS, "break-glass: emergency clinical access, always flagged"),
    (Role.SERVICE, "service: a PACS or EHR integration (tokens, no password)"),
)


def may_manage(principal: Principal) -> bool:
    return may_enter(principal.role, "console:accounts")


def state_of(account: Account, now: float) -> str:
    if account.disabled:
        return "disabled"
    if account.locked_until > now:
        until = time.strftime("%H:%M UTC", time.gmtime(account.locked_until))
        return f"LOCKED until {until}"
    return "active"


@dataclass(frozen=True)
class NewAccount:
    username: str
    role: Role
    password: str | None


class AccountsScreen(Screen[None]):
    BINDINGS = [  # noqa: RUF012 - Textual's API
        Binding("escape", "back", "Back"),
        Binding("n", "add", "New account"),
        Binding("p", "password", "Reset password"),
    ]

    def __init__(self, principal: Principal, backends: ConsoleBackends) -> None:
        super().__init__()
        self.principal = principal
        self.backends = backends
        self.accounts: list[Account] = []

    def compose(self) -> ComposeResult:
        yield Static("Accounts", id="accounts-title")
        yield DataTable(id="accounts", cursor_type="row", zebra_stripes=True)
        with Horizontal(classes="buttons"):
            yield Button("New account…", id="add", variant="primary")
            yield Button("Disable", id="disable", variant="error")
            yield Button("Enable", id="enable")
            yield Button("Unlock", id="unlock")
            yield Button("Reset password…", id="password")
        yield Static("", id="account-result")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#accounts", DataTable).add_columns(*COLUMNS)
        self._enable_buttons()
        self.load()

    @work(thread=True, exclusive=True, group="accounts-load")
    def load(self) -> None:
        try:
            accounts = self.backends.identity.accounts()
        except ApplianceError as exc:
            self.post_message(AccountsLoaded([], str(exc)))
        else:
            self.post_message(AccountsLoaded(accounts))

    def on_accounts_loaded(self, message: AccountsLoaded) -> None:
        if message.error:
            self._show(f"cannot read the accounts: {message.error}", ok=False)
        table = self.query_one("#accounts", DataTable)
        row = table.cursor_row
        self.accounts = message.accounts
        table.clear()
        now = time.time()
        for a in self.accounts:
            table.add_row(a.username, str(a.role), state_of(a, now))
        if self.accounts:
            table.move_cursor(row=min(max(row, 0), len(self.accounts) - 1))
        self._enable_buttons()

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._enable_buttons()

    def selected(self) -> Account | None:
        row = self.query_one("#accounts", DataTable).cursor_row
        return self.accounts[row] if 0 <= row < len(self.accounts) else None

    def _enable_buttons(self) -> None:
        account = self.selected()
        locked = account is not None and account.locked_until > time.time()
        self.query_one("#disable", Button).disabled = account is None or account.disabled
        self.query_one("#enable", Button).disabled = account is None or not account.disabled
        self.query_one("#unlock", Button).disabled = not locked
        resettable = (  # one's own password is changed on the dashboard, knowing it (`p`)
            account is not None
            and account.role is not Role.SERVICE
            and account.username != self.principal.username
        )
        self.query_one("#password", Button).disabled = not resettable

    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions: dict[str | None, Callable[[], None]] = {
            "add": self.action_add,
            "disable": self.confirm_disable,
            "enable": lambda: self._on_selected("enable"),
            "unlock": lambda: self._on_selected("unlock"),
            "password": self.action_password,
        }
        actions[event.button.id]()

    def action_add(self) -> None:
        def answered(new: NewAccount | None) -> None:
            if new is not None:
                identity = self.backends.identity
                self.change(
                    f"Account '{new.username}' ({new.role}) created.",
                    lambda: identity.add_account(
                        self.principal, new.username, new.role, new.password
                    ),  # fmt: skip
                )

        self.app.push_screen(NewAccountDialog(), answered)

    def confirm_disable(self) -> None:
        account = self.selected()
        if account is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._on_selected("disable")

        question = (f"Disable '{account.username}' ({account.role})? Its sessions and tokens "
                    "end at once.")  # fmt: skip
        self.app.push_screen(ConfirmDialog(question, yes="Disable"), answered)

    def action_password(self) -> None:
        account = self.selected()
        if account is None or self.query_one("#password", Button).disabled:
            return

        identity, name = self.backends.identity, account.username

        def answered(password: str | None) -> None:
            if password is not None:
                self.change(
                    f"Password of '{name}' reset; its sessions are ended.",
                    lambda: identity.set_password(self.principal, name, password),
                )

        self.app.push_screen(PasswordDialog(name), answered)

    def _on_selected(self, what: str) -> None:
        account = self.selected()
        if account is None:
            return
        identity, name = self.backends.identity, account.username
        calls: dict[str, tuple[str, Callable[[], None]]] = {
            "disable": (f"Account '{name}' disabled; its sessions and tokens are revoked.",
                        lambda: identity.disable(self.principal, name)),
            "enable": (f"Account '{name}' enabled; its user logs in afresh.",
                       lambda: identity.enable(self.principal, name)),
            "unlock": (f"Account '{name}' unlocked.",
                       lambda: identity.unlock(self.principal, name)),
        }  # fmt: skip
        self.change(*calls[what])

    @work(thread=True, exclusive=True, group="accounts-change")
    def change(self, done: str, call: Callable[[], None]) -> None:
        """Run one identity call in a thread (password hashing, the audit append)."""
        try:
            call()
        except UnrecordedError as exc:  # done, but missing from the trail: the message says so
            self.post_message(AccountChanged(str(exc)))
        except ApplianceError as exc:
            self.post_message(AccountChanged(None, str(exc)))
        else:
            self.post_message(AccountChanged(done))

    def on_account_changed(self, message: AccountChanged) -> None:
        if message.done is None:
            self._show(f"Refused: {message.error}", ok=False)
            self.notify(message.error or "", title="Not changed", severity="error")
        else:
            self._show(message.done, ok=True)
            self.notify(message.done, title="Account changed")
        self.load()

    def _show(self, text: str, ok: bool) -> None:
        widget = self.query_one("#account-result", Static)
        widget.update(text)
        widget.set_class(ok, "ok")
        widget.set_class(not ok, "refused")

    def action_back(self) -> None:
        self.app.pop_screen()


class _PasswordForm(ModalScreen[Any]):
    """A form with a password typed twice (``#password``, ``#repeat``); Enter moves on, Escape
    cancels; :meth:`submitted` answers the button ``#yes``."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]  # noqa: RUF012 - Textual's API
    title_text = ""
    yes = "OK"

    def fields(self) -> ComposeResult:
        yield from ()

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="account"):
            yield Static(self.title_text, classes="dialog-title")
            yield from self.fields()
            yield Input(placeholder="password (at least 12 characters)", password=True,
                        id="password")  # fmt: skip
            yield Input(placeholder="the password again", password=True, id="repeat")
            yield Static("", id="dialog-error")
            with Horizontal(classes="buttons"):
                yield Button(self.yes, variant="primary", id="yes")
                yield Button("Cancel", id="no")

    def on_mount(self) -> None:
        self.query(Input).first().focus()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.focus_next()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "yes":
            self.submitted()
        else:
            self.dismiss(None)

    def submitted(self) -> None:
        raise NotImplementedError

    def password(self) -> str | None:
        """The password, or None (and a word on the form) when the two differ."""
        password = self.query_one("#password", Input).value
        if password != self.query_one("#repeat", Input).value:
            self.error("The two passwords differ; type them again.")
            return None
        return password

    def error(self, text: str) -> None:
        self.query_one("#dialog-error", Static).update(text)

    def action_cancel(self) -> None:
        self.dismiss(None)


class NewAccountDialog(_PasswordForm):
    """Name, role and password (typed twice) of a new account; the service judges them."""

    title_text = "New account"
    yes = "Create"

    def fields(self) -> ComposeResult:
        yield Input(placeholder="user name (lower-case letters, digits, . _ -)", id="new-user")
        yield Select([(label, role.value) for role, label in ROLES], value=Role.CLINICIAN.value,
                     allow_blank=False, id="new-role")  # fmt: skip

    def on_select_changed(self, event: Select.Changed) -> None:
        service = event.value == Role.SERVICE.value
        for selector in ("#password", "#repeat"):
            self.query_one(selector, Input).disabled = service

    def submitted(self) -> None:
        name = self.query_one("#new-user", Input).value.strip()
        role = Role(str(self.query_one("#new-role", Select).value))
        if not name:
            self.error("Type the new account's user name.")
        elif role is Role.SERVICE:
            self.dismiss(NewAccount(name, role, None))
        elif (password := self.password()) is not None:
            self.dismiss(NewAccount(name, role, password))


class PasswordDialog(_PasswordForm):
    """A new password for ``username``, typed twice."""

    yes = "Reset"

    def __init__(self, username: str) -> None:
        super().__init__()
        self.title_text = (
            f"New password for '{username}'. Its sessions end, and a lockout is lifted."
        )

    def submitted(self) -> None:
        if (password := self.password()) is not None:
            self.dismiss(password)


class ChangePasswordDialog(_PasswordForm):
    """One's own password: the current one, then the new one typed twice."""

    title_text = "Change your password. Your other sessions end."
    yes = "Change"

    def fields(self) -> ComposeResult:
        yield Input(placeholder="current password", password=True, id="current")

    def submitted(self) -> None:
        current = self.query_one("#current", Input).value
        if not current:
            self.error("Type your current password.")
        elif (password := self.password()) is not None:
            self.dismiss((current, password))
