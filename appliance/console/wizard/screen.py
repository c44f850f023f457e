"""The wizard screen: the list of steps with their notes, and the pane of the first step not
done. Each completed step is recorded (``appliance.setup.progress``) before the next opens, so a
new console on the same state folder resumes where the power failed."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from appliance.console.backends import ConsoleBackends
from appliance.console.messages import SessionOpened, StepDone, WizardFinished
from appliance.console.provision import Provisioning
from appliance.console.wizard.base import StepPane
from appliance.console.wizard.panes_box import AdminPane, NetworkPane, SitePane, TimePane
from appliance.console.wizard.panes_trust import (
    PeersPane,
    SelfTestPane,
    TrustPane,
    VendorRootPane,
)
from appliance.identity.roles import Principal
from appliance.setup.progress import STEPS, TITLES, Step, WizardProgress

PANES: dict[Step, type[StepPane]] = {
    pane.step: pane
    for pane in (
        SitePane,
        NetworkPane,
        TimePane,
        TrustPane,
        AdminPane,
        VendorRootPane,
        PeersPane,
        SelfTestPane,
    )  # fmt: skip
}


class WizardScreen(Screen[None]):
    def __init__(self, backends: ConsoleBackends, principal: Principal | None) -> None:
        super().__init__()
        if backends.provisioning is None:
            raise ValueError("the wizard needs the provisioning backend")
        self.backends = backends
        self.prov: Provisioning = backends.provisioning
        self.principal = principal

    @property
    def actor(self) -> str:
        return self.principal.username if self.principal else "provisioning"

    def compose(self) -> ComposeResult:
        yield Static("First-boot provisioning", id="wizard-title")
        with Horizontal(id="wizard-body"):
            yield Static("", id="wizard-steps")
            yield Vertical(id="wizard-pane")
        yield Footer()

    def on_mount(self) -> None:
        state = self.prov.progress()
        if state.done:
            self.notify(f"Resuming at: {TITLES[state.next_step]}." if state.next_step else "")
        self.show(state)

    def on_screen_resume(self) -> None:
        for pane in self.query(SelfTestPane):
            pane.show_models()

    def show(self, state: WizardProgress) -> None:
        step = state.next_step
        listing = Text()
        for i, s in enumerate(STEPS, 1):
            mark = "✓" if s in state.done else ("▶" if s is step else " ")
            listing.append(f"{mark} {i}. {TITLES[s]}\n", style="bold" if s is step else "")
            if s in state.done:
                listing.append(f"     {state.done[s]}\n", style="dim")
        self.query_one("#wizard-steps", Static).update(listing)
        holder = self.query_one("#wizard-pane", Vertical)
        holder.remove_children()
        if step is None:
            self.post_message(WizardFinished(self.principal))
            return
        title = self.query_one("#wizard-title", Static)
        title.update(f"First-boot provisioning: step {STEPS.index(step) + 1} of {len(STEPS)}, "
                     f"{TITLES[step]}")  # fmt: skip
        holder.mount(PANES[step](self))

    def on_step_done(self, message: StepDone) -> None:
        message.stop()
        self.show(self.prov.record(message.step, message.note))

    def on_session_opened(self, message: SessionOpened) -> None:
        self.principal = message.principal  # and on to the app, for idle logoff
