"""What every wizard pane shares: its step, a thread worker that reports by message, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.containers import Vertical
from textual.widgets import Input, Static

from appliance.console.messages import StepDone, WorkDone
from appliance.console.provision import Provisioning
from appliance.errors import ApplianceError
from appliance.setup.progress import Step

if TYPE_CHECKING:
    from appliance.console.wizard.screen import WizardScreen


class StepPane(Vertical):
    """One step. Subclasses compose their fields, call :meth:`run` for slow work and
    :meth:`done` once everything the step writes is durable."""

    step: ClassVar[Step]

    def __init__(self, wizard: WizardScreen) -> None:
        super().__init__(classes="step-pane")
        self.wizard = wizard
        self.prov: Provisioning = wizard.prov

    def error_line(self) -> Static:
        return Static("", id="step-error", classes="hidden")

    def value(self, selector: str) -> str:
        return self.query_one(selector, Input).value

    def done(self, note: str) -> None:
        self.post_message(StepDone(self.step, note))

    def fail(self, message: str, hint: str = "") -> None:
        error = self.query_one("#step-error", Static)
        error.update(f"{message}\n{hint}".strip())
        error.remove_class("hidden")

    def clear_error(self) -> None:
        self.query_one("#step-error", Static).add_class("hidden")

    def attempt(self, func: Callable[[], None]) -> None:
        """A quick check-and-write on the UI thread; an ApplianceError becomes the error line."""
        self.clear_error()
        try:
            func()
        except ApplianceError as exc:
            self.fail(exc.message, exc.hint or "")

    @work(thread=True, exclusive=True, group="wizard")
    def run(self, tag: str, func: Callable[[], object]) -> None:
        """``func`` in a thread (TPM, password hashing, network, OpenVINO); the result comes
        back as a WorkDone message to :meth:`finished`."""
        try:
            result = func()
        except ApplianceError as exc:
            self.post_message(WorkDone(tag, None, exc.message, exc.hint or ""))
        except OSError as exc:
            self.post_message(WorkDone(tag, None, str(exc), "Check the medium and try again."))
        else:
            self.post_message(WorkDone(tag, result))

    def on_work_done(self, message: WorkDone) -> None:
        message.stop()
        if message.error:
            self.fail(message.error, message.hint)
        else:
            self.clear_error()
            self.finished(message.tag, message.result)

    def finished(self, tag: str, result: object) -> None:
        """A worker's result arrived (override in panes that use :meth:`run`)."""
