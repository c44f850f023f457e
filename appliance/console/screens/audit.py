"""The audit view for admins and auditors: the newest records with a filter, the chain verified
in a thread worker, an export to the USB stick, and (admins) break-glass acknowledgement."""

from __future__ import annotations

from datetime import UTC, datetime

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Input, Static

from appliance.audit.log import VerifyReport
from appliance.audit.records import AuditRecord
from appliance.console.backends import ConsoleBackends
from appliance.console.dialogs.confirm import ConfirmDialog
from appliance.console.messages import AuditExported, AuditLoaded, AuditVerified
from appliance.errors import ApplianceError
from appliance.identity.roles import Principal, may_enter
from appliance.identity.store import BreakGlassUse

NEEDS_ROLE = "The audit view needs an auditor or admin account."
COLUMNS = ("seq", "time", "event", "outcome", "actor", "flagged")


def may_read(principal: Principal) -> bool:
    return may_enter(principal.role, "console:audit")


def matches(record: AuditRecord, needle: str) -> bool:
    """Whether ``needle`` (case-insensitive) is in the record's event or actor."""
    needle = needle.strip().lower()
    return not needle or needle in record.event.lower() or needle in record.actor.lower()


def verdict(report: VerifyReport) -> tuple[str, bool]:
    """The verify result line and whether the chain is intact."""
    if report.ok:
        return f"intact: {report.records} records, {report.checkpoints} checkpoints", True
    problems = "\n".join(str(p) for p in report.problems)
    return f"TAMPERED OR DAMAGED:\n{problems}", False


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class AuditScreen(Screen[None]):
    BINDINGS = [Binding("escape", "back", "Back")]  # noqa: RUF012 - Textual's API

    def __init__(self, principal: Principal, backends: ConsoleBackends) -> None:
        super().__init__()
        self.principal = principal
        self.backends = backends
        self.records: list[AuditRecord] = []
        self.uses: list[BreakGlassUse] = []
        self.may_export = may_enter(principal.role, "console:audit export")
        self.may_verify = may_enter(principal.role, "console:audit verify")
        self.may_ack = may_enter(principal.role, "console:break-glass ack")

    def compose(self) -> ComposeResult:
        yield Static("Audit trail (newest last)", id="audit-title")
        yield Input(placeholder="filter: event or actor", id="filter")
        yield DataTable(id="records", cursor_type="row", zebra_stripes=True)
        with Horizontal(classes="buttons"):
            yield Button("Verify chain", id="verify", disabled=not self.may_verify)
            yield Button("Export to USB", id="export", disabled=not self.may_export)
        yield Static("", id="verdict")
        yield Static("", id="export-result")
        if self.may_ack:
            yield Static("Break-glass uses waiting for acknowledgement", id="bg-title")
            yield DataTable(id="break-glass", cursor_type="row")
            yield Button("Acknowledge", id="ack", variant="warning")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#records", DataTable).add_columns(*COLUMNS)
        if self.may_ack:
            self.query_one("#break-glass", DataTable).add_columns("#", "user", "at", "reason")
        self.load()

    @work(thread=True, exclusive=True, group="audit-load")
    def load(self) -> None:
        """Read the log and break-glass uses in a thread; only the message reaches the screen."""
        uses = self.backends.identity.unacknowledged_break_glass() if self.may_ack else []
        try:
            records = self.backends.audit_records()
        except ApplianceError as exc:
            self.post_message(AuditLoaded([], uses, str(exc)))
        else:
            self.post_message(AuditLoaded(records, uses))

    def on_audit_loaded(self, message: AuditLoaded) -> None:
        self.records, self.uses = message.records, message.break_glass
        if message.error:
            self._show("#verdict", f"cannot read the audit log: {message.error}", ok=False)
        self._fill_records()
        if self.may_ack:
            table = self.query_one("#break-glass", DataTable)
            table.clear()
            for use in self.uses:
                table.add_row(str(use.id), use.username, _when(use.at), use.reason)
            self.query_one("#ack", Button).disabled = not self.uses

    def _fill_records(self) -> None:
        needle = self.query_one("#filter", Input).value
        table = self.query_one("#records", DataTable)
        table.clear()
        for r in self.records:
            if matches(r, needle):
                flag = "FLAGGED" if r.flagged else ""
                table.add_row(str(r.seq), r.time, str(r.event), str(r.outcome), r.actor, flag)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self._fill_records()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "verify":
            self._show("#verdict", "verifying…", ok=True)
            self.verify()
        elif event.button.id == "export":
            self._show("#export-result", "exporting…", ok=True)
            self.export()
        elif event.button.id == "ack":
            self.confirm_ack()

    @work(thread=True, exclusive=True, group="audit-verify")
    def verify(self) -> None:
        try:
            report = self.backends.audit_verify()
        except ApplianceError as exc:
            self.post_message(AuditVerified(None, str(exc)))
        else:
            self.post_message(AuditVerified(report))

    def on_audit_verified(self, message: AuditVerified) -> None:
        if message.report is None:
            self._show("#verdict", f"cannot verify: {message.error}", ok=False)
        else:
            self._show("#verdict", *verdict(message.report))

    @work(thread=True, exclusive=True, group="audit-export")
    def export(self) -> None:
        if not self.may_export:
            self.post_message(AuditExported(None, error="exporting needs an auditor or admin"))
            return
        try:
            path, count = self.backends.audit_export(self.principal, self.backends.usb_dir)
        except (ApplianceError, OSError) as exc:
            self.post_message(AuditExported(None, error=str(exc)))
        else:
            self.post_message(AuditExported(path, count))

    def on_audit_exported(self, message: AuditExported) -> None:
        if message.path is None:
            self._show("#export-result", f"export failed: {message.error}", ok=False)
        else:
            text = f"exported {message.count} records to {message.path}"
            self._show("#export-result", text, ok=True)
            self.load()  # the export itself is now a record

    def confirm_ack(self) -> None:
        table = self.query_one("#break-glass", DataTable)
        row = table.cursor_row
        if not self.uses or not 0 <= row < len(self.uses):
            return
        use = self.uses[row]

        def answered(yes: bool | None) -> None:
            if yes:
                self.acknowledge(use)

        question = f"Acknowledge break-glass use #{use.id} by {use.username} ({use.reason})?"
        self.app.push_screen(ConfirmDialog(question, yes="Acknowledge"), answered)

    def acknowledge(self, use: BreakGlassUse) -> None:
        try:
            self.backends.identity.acknowledge_break_glass(self.principal, use.id)
        except ApplianceError as exc:
            self.notify(str(exc), title="Not acknowledged", severity="error")
        else:
            self.notify(f"Break-glass use #{use.id} acknowledged.")
        self.load()

    def _show(self, selector: str, text: str, ok: bool) -> None:
        widget = self.query_one(selector, Static)
        widget.update(text)
        widget.set_class(ok, "ok")
        widget.set_class(not ok, "refused")

    def action_back(self) -> None:
        self.app.pop_screen()
