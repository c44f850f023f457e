"""What a bundle holds, shown before it is installed; the result is whether to install."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from appliance.updates.preview import BundlePreview


def describe(p: BundlePreview) -> str:
    """The preview as the technician reads it: model, versions, signers, compatibility."""
    lines = [f"{p.file}  ({p.size} bytes)"]
    if p.manifest is not None:
        m = p.manifest
        lines.append(f"model:          {m.name} {m.version} ({m.task})")
    if p.bundle_version is not None:
        root = f", vendor root v{p.root_version}" if p.root_version else ""
        lines.append(f"bundle number:  {p.bundle_version}{root}")
    lines += [f"signed:         {s}" for s in p.signers]
    if p.compatibility:
        ok = "compatible" if p.compatible else "NOT compatible"
        lines.append(f"compatibility:  {ok}: {p.compatibility}")
    if p.problem:
        lines.append(f"\nThe update agent will refuse it: {p.problem}")
    return "\n".join(lines)


class BundleDialog(ModalScreen[bool]):
    BINDINGS = [Binding("escape", "no", "Cancel")]  # noqa: RUF012 - Textual's API

    def __init__(self, preview: BundlePreview) -> None:
        super().__init__()
        self.preview = preview

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="bundle"):
            yield Static(describe(self.preview), id="bundle-preview",
                         classes="" if self.preview.installable else "refused")  # fmt: skip
            if self.preview.installable:
                yes = Button("Install", variant="primary", id="yes")
            else:  # the agent checks it again and records the refusal on the audit trail
                yes = Button("Try anyway (refusal is audited)", variant="error", id="yes")
            with Horizontal(classes="buttons"):
                yield yes
                yield Button("Cancel", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_no(self) -> None:
        self.dismiss(False)
