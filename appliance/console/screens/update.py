"""Update import: the bundles on the USB stick, a confirmed install in a thread worker, a
progress bar through verify, install and validate, and the result with its reason."""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Label, ListItem, ListView, ProgressBar, Static

from appliance.console.backends import ConsoleBackends
from appliance.console.dialogs.bundle import BundleDialog
from appliance.console.messages import PreviewReady, UpdateFinished, UpdateProgressed
from appliance.errors import ApplianceError
from appliance.identity.roles import Principal, may_enter
from appliance.updates.agent import AgentState, Phase, ProgressEvent
from appliance.updates.bundle import BUNDLE_SUFFIX

NEEDS_ROLE = "Installing updates needs a technician or admin account."


def may_install(principal: Principal) -> bool:
    return may_enter(principal.role, "console:update")


def find_bundles(folder: Path) -> list[Path]:
    """The bundle files directly in ``folder`` (none if it is missing: no stick inserted)."""
    try:
        return sorted(p for p in folder.iterdir() if p.name.endswith(BUNDLE_SUFFIX) and p.is_file())
    except OSError:
        return []


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:  # noqa: PLR2004
            return f"{n:g} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n //= 1024
    return f"{n:.1f} GiB"


def outcome(state: AgentState | None, error: str) -> tuple[str, bool]:
    """The result line and whether it is a success."""
    if state is not None and state.phase is Phase.DONE:
        return f"installed {state.model} {state.version}, it is live", True
    reason = error or (state.reason if state else None) or "no reason given"
    return f"refused, nothing changed: {reason.removeprefix('refused: ')}", False


class UpdateScreen(Screen[None]):
    BINDINGS = [  # noqa: RUF012 - Textual's API
        Binding("escape", "back", "Back"),
        Binding("r", "rescan", "Rescan USB"),
    ]

    def __init__(self, principal: Principal, backends: ConsoleBackends) -> None:
        super().__init__()
        self.principal = principal
        self.usb_dir = backends.usb_dir
        self.installer = backends.installer
        self.preview = backends.preview
        self.bundles: list[Path] = []
        self.busy = False

    def compose(self) -> ComposeResult:
        yield Static(f"Update bundles on USB ({self.usb_dir})", id="update-title")
        yield ListView(id="bundles")
        yield Static("", id="no-bundles", classes="hidden")
        yield Static("Select a bundle and press Enter to install it.", id="phase")
        yield ProgressBar(id="progress", show_eta=False)
        yield Static("", id="result")
        yield Footer()

    def on_mount(self) -> None:
        self.action_rescan()

    def action_rescan(self) -> None:
        if self.busy:
            return
        self.bundles = find_bundles(self.usb_dir)
        listing = self.query_one("#bundles", ListView)
        listing.clear()
        for path in self.bundles:
            listing.append(ListItem(Label(f"{path.name}  ({_size(path.stat().st_size)})")))
        empty = self.query_one("#no-bundles", Static)
        empty.update(f"No {BUNDLE_SUFFIX} files in {self.usb_dir}: insert the USB stick.")
        empty.set_class(bool(self.bundles), "hidden")

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        index = event.list_view.index
        if self.busy or index is None or index >= len(self.bundles):
            return
        self.query_one("#phase", Static).update(f"looking inside {self.bundles[index].name}…")
        self.look_inside(self.bundles[index])

    @work(thread=True, exclusive=True, group="preview")
    def look_inside(self, bundle: Path) -> None:
        """Read the bundle's metadata and manifest in a thread; the dialog comes by message."""
        self.post_message(PreviewReady(bundle, self.preview(bundle)))

    def on_preview_ready(self, message: PreviewReady) -> None:
        self.query_one("#phase", Static).update("Check what the bundle holds, then confirm.")

        def answered(yes: bool | None) -> None:
            if yes:
                self.start_install(message.bundle)

        self.app.push_screen(BundleDialog(message.preview), answered)

    def start_install(self, bundle: Path) -> None:
        if not may_install(self.principal):
            self._show(*outcome(None, NEEDS_ROLE))
            return
        self.busy = True
        self.query_one("#result", Static).update("")
        self.query_one("#progress", ProgressBar).update(total=None, progress=0)
        self.install(bundle)

    @work(thread=True, exclusive=True, group="update")
    def install(self, bundle: Path) -> None:
        """Run the agent in a thread; only messages reach the screen."""
        try:
            state = self.installer(bundle, self.principal.username, self._report)
        except (ApplianceError, OSError) as exc:
            self.post_message(UpdateFinished(None, str(exc)))
        else:
            self.post_message(UpdateFinished(state))

    def _report(self, event: ProgressEvent) -> None:
        self.post_message(UpdateProgressed(event))  # from the worker thread: a message only

    def on_update_progressed(self, message: UpdateProgressed) -> None:
        event = message.event
        self.query_one("#phase", Static).update(f"{event.phase}: {event.message}")
        total = max(event.total, 1)
        self.query_one("#progress", ProgressBar).update(total=total, progress=event.done)

    def on_update_finished(self, message: UpdateFinished) -> None:
        self.busy = False
        self._show(*outcome(message.state, message.error))
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=1, progress=1)
        state = message.state
        self.query_one("#phase", Static).update(f"{state.phase if state else Phase.FAILURE}")

    def _show(self, text: str, ok: bool) -> None:
        result = self.query_one("#result", Static)
        result.update(text)
        result.set_class(ok, "ok")
        result.set_class(not ok, "refused")

    def action_back(self) -> None:
        if self.busy:
            self.notify("An update is running; wait for its result.", severity="warning")
            return
        self.app.pop_screen()
