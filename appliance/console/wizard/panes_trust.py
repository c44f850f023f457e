"""Wizard panes for trust and service: TPM enrollment with the recovery codes, the vendor root,
PACS peers with C-ECHO, the self-test of every installed model."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Input, Label, ListItem, ListView, Static

from appliance.console.provision import RootInfo, last_group
from appliance.console.screens.update import UpdateScreen
from appliance.console.wizard.base import StepPane
from appliance.dicom.peers import Peer
from appliance.errors import ConfigError
from appliance.setup.progress import Step
from appliance.setup.selftest import SelfTest

RECORD = (
    "Write it down NOW and keep it off the box (the clinic's safe). It is shown once and stored "
    "nowhere. Then type its LAST group below to confirm."
)


def _buttons(*buttons: Button) -> Horizontal:
    return Horizontal(*buttons, classes="buttons")


class TrustPane(StepPane):
    """Seal the keys; the recovery code, then the disk's recovery key, each shown once and
    confirmed by typing back its last group."""

    step = Step.TRUST

    def compose(self) -> ComposeResult:
        again = self.prov.enrolled()
        yield Static(
            "The keys are sealed already (by `appliance run`, or before a power cut), but no "
            "recovery code was confirmed here: a NEW recovery code replaces it." if again else
            f"Seal the box's keys to this TPM (PCRs {','.join(map(str, self.prov.config.pcrs))})."
            " A recovery code is shown ONCE.", id="trust-intro",
        )  # fmt: skip
        label = "Issue a new recovery code" if again else "Seal the keys"
        yield _buttons(Button(label, variant="primary", id="enroll"))
        yield Static("", id="code", classes="hidden secret")
        yield Input(placeholder="the LAST group of the code above", id="confirm", classes="hidden")
        yield _buttons(Button("I wrote it down", id="confirmed", classes="hidden"))
        yield self.error_line()

    def on_mount(self) -> None:
        self.code = ""
        self.kind = "recovery"

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "enroll":
            event.button.disabled = True
            self.run("enroll", self.prov.enroll)
        elif event.button.id == "confirmed":
            self.confirm()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.confirm()

    def finished(self, tag: str, result: object) -> None:
        self.query_one("#enroll", Button).add_class("hidden")
        self.show_code(str(result), "recovery code (TPM keys)")

    def show_code(self, code: str, what: str) -> None:
        self.code, self.kind = code, what
        shown = self.query_one("#code", Static)
        shown.update(f"{what}:\n\n    {code}\n\n{RECORD}")
        shown.remove_class("hidden")
        for selector in ("#confirm", "#confirmed"):
            self.query_one(selector).remove_class("hidden")
        entry = self.query_one("#confirm", Input)
        entry.value = ""
        entry.focus()

    def confirm(self) -> None:
        typed = self.value("#confirm").strip().upper()
        if not self.code or typed != last_group(self.code):
            self.fail(f"that is not the last group of the {self.kind}.",
                      "Check what you wrote down, and type its last group exactly.")  # fmt: skip
            return
        self.clear_error()
        if self.kind.startswith("recovery"):
            disk = self.prov.luks_key()
            if disk:
                self.show_code(disk, "disk recovery key (LUKS)")
                return
            self.done("keys sealed; recovery code confirmed")
            return
        self.prov.forget_luks_key()
        self.done("keys sealed; recovery code and disk key confirmed")


class VendorRootPane(StepPane):
    step = Step.VENDOR_ROOT

    def compose(self) -> ComposeResult:
        yield Static("Import the vendor's root of trust (root.json) from the USB stick.")
        yield ListView(id="roots")
        yield Static("", id="root-info", classes="hidden")
        yield _buttons(
            Button("Rescan USB", id="rescan"),
            Button("The fingerprint matches: trust it", variant="primary", id="trust",
                   disabled=True),
        )  # fmt: skip
        yield self.error_line()

    def on_mount(self) -> None:
        self.chosen: RootInfo | None = None
        self.roots: list[Path] = []
        trusted = self.prov.trusted_root()
        if trusted is not None:  # imported before a power cut
            self.done(f"SHA-256 {trusted.sha256[:16]}… (already trusted)")
            return
        self.rescan()

    def rescan(self) -> None:
        self.roots = self.prov.usb_roots()
        listing = self.query_one("#roots", ListView)
        listing.clear()
        for path in self.roots:
            listing.append(ListItem(Label(path.name)))
        if not self.roots:
            self.fail(f"no root .json file in {self.prov.usb_dir}.", "Insert the vendor's stick.")
        else:
            self.clear_error()

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        index = event.list_view.index
        if index is not None and index < len(self.roots):
            path = self.roots[index]
            self.run("inspect", lambda: self.prov.root_info(path))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "rescan":
            self.rescan()
        elif self.chosen is not None:
            chosen, actor = self.chosen, self.wizard.actor
            self.run("trust", lambda: self.prov.trust_root(chosen.path, actor))

    def finished(self, tag: str, result: object) -> None:
        if tag == "trust":
            self.done(f"SHA-256 {str(result)[:16]}…")
            return
        if not isinstance(result, RootInfo):
            return
        self.chosen = result
        info = self.query_one("#root-info", Static)
        info.update(
            f"{result.path.name}: root version {result.version}, expires {result.expires}\n"
            f"roles: {result.roles}\nSHA-256 fingerprint (compare with the vendor's letter):\n"
            f"    {result.grouped}"
        )
        info.remove_class("hidden")
        self.query_one("#trust", Button).disabled = False


class PeersPane(StepPane):
    step = Step.PEERS

    def compose(self) -> ComposeResult:
        yield Static("PACS and modalities this box talks to; each is tested with a C-ECHO.")
        yield Static("", id="peer-list")
        with Horizontal(id="peer-fields"):
            yield Input(placeholder="AE title", id="ae")
            yield Input(placeholder="host", id="host")
            yield Input(placeholder="port", id="port")
        yield Input(placeholder="description (optional)", id="desc")
        yield _buttons(
            Button("C-ECHO and add", id="add"),
            Button("Save and continue", variant="primary", id="next"),
        )
        yield self.error_line()

    def on_mount(self) -> None:
        self.peers: list[Peer] = self.prov.peers()
        self.show_peers()

    def show_peers(self) -> None:
        lines = [f"  {p.ae_title} at {p.host}:{p.port}  {p.description}" for p in self.peers]
        text = "\n".join(lines) or "  no peer yet: results cannot be sent to a PACS"
        self.query_one("#peer-list", Static).update(text)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "next":
            self.attempt(self.save)
            return
        self.clear_error()
        try:
            port = int(self.value("#port"))
        except ValueError:
            self.fail(f"port {self.value('#port')!r} is not a number.", "Give 1 to 65535.")
            return
        try:
            peer = Peer(self.value("#ae").strip(), self.value("#host").strip(), port,
                        self.value("#desc").strip())  # fmt: skip
        except ConfigError as exc:
            self.fail(exc.message, exc.hint or "")
            return

        def test() -> Peer:
            self.prov.echo(peer)
            return peer

        self.run("echo", test)

    def finished(self, tag: str, result: object) -> None:
        if isinstance(result, Peer):
            self.peers = [p for p in self.peers if p.ae_title != result.ae_title] + [result]
            self.show_peers()
            self.notify(f"C-ECHO to {result.ae_title} succeeded.")

    def save(self) -> None:
        self.prov.save_peers(self.peers)
        self.done(f"{len(self.peers)} peer(s): " + ", ".join(p.ae_title for p in self.peers))


class SelfTestPane(StepPane):
    step = Step.SELF_TEST

    def compose(self) -> ComposeResult:
        yield Static("Run every installed model on its signed reference set, on this box.")
        yield Static("", id="models")
        yield Static("", id="selftest-result")
        yield _buttons(
            Button("Import bundles from USB", id="usb"),
            Button("Run the self-test", variant="primary", id="run-test"),
            Button("Finish", variant="success", id="finish", disabled=True),
        )
        yield self.error_line()

    def on_mount(self) -> None:
        self.result: SelfTest | None = None
        self.show_models()

    def show_models(self) -> None:
        models = self.prov.models()
        text = ", ".join(models) if models else "none yet (import a signed bundle from USB)"
        self.query_one("#models", Static).update(f"installed models: {text}")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "usb" and self.wizard.principal is not None:
            self.app.push_screen(UpdateScreen(self.wizard.principal, self.wizard.backends))
        elif event.button.id == "run-test":
            event.button.disabled = True
            self.query_one("#selftest-result", Static).update("running…")
            self.run("selftest", self.prov.selftest)
        elif event.button.id == "finish" and self.result is not None:
            checks = self.result.checks
            self.done(f"{len(checks)} model(s) passed" if checks else "no model installed")

    def finished(self, tag: str, result: object) -> None:
        self.query_one("#run-test", Button).disabled = False
        if not isinstance(result, SelfTest):
            return
        self.result = result
        lines = [
            f"{'PASS' if c.passed else 'FAIL'}  {c.model} {c.version} (slot {c.slot}): {c.reason}"
            for c in result.checks
        ] or ["no model installed: nothing to run"]
        shown = self.query_one("#selftest-result", Static)
        shown.update("\n".join(lines))
        shown.set_class(result.passed, "ok")
        shown.set_class(not result.passed, "refused")
        self.query_one("#finish", Button).disabled = not result.passed
        if not result.passed:
            self.fail("a model failed its self-test.", "Install a bundle that validates on this "
                      "box (the vendor's newest), then run the self-test again.")  # fmt: skip
