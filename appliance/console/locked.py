"""The console when the data volume stays locked: what happened, and the recovery path.

The image's ``appliance-data.service`` (image/rootfs/usr/lib/appliance/data-volume) writes the
volume's state to ``/run/appliance/data-volume``. When the TPM refuses to unlock the volume (PCR 7,
the firmware's Secure Boot state, is not the one the key was sealed to), nothing on the box can
open its state: no login, no dashboard. This console says so, says what to do, and takes the
recovery key recorded at provisioning: it writes it to ``/run/appliance/recovery-key-request``,
where ``appliance-data-recover.path`` hands it to the privileged data-volume script, which unlocks
with it and seals the key to the TPM's current state again. The key is never logged.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from textual.app import App, ComposeResult
from textual.containers import Vertical
from textual.widgets import Button, Input, Static

RUN_DIR = Path("/run/appliance")
STATUS_FILE = RUN_DIR / "data-volume"
REQUEST_FILE = RUN_DIR / "recovery-key-request"
# systemd-cryptenroll's recovery keys: 8 groups of 8 "modhex" characters.
RECOVERY_KEY = re.compile(r"^[cbdefghijklnrtuv]{8}(-[cbdefghijklnrtuv]{8}){7}$")

EXPLANATION = """\
The data volume did not unlock.

The box keeps its models, results, accounts and audit trail on an encrypted volume whose key the
TPM releases only to the firmware state it was sealed to at provisioning (PCR 7: the Secure Boot
keys and settings). That state has changed: a firmware update, a changed Secure Boot setting, or
this disk moved to another box. Nothing was erased; the box cannot read it until you act.

What to do:
  1. If the firmware settings were changed by mistake, restore them and restart the box.
  2. Otherwise enter the recovery key recorded at provisioning (8 groups of 8 letters). The box
     unlocks with it and seals the key to the current firmware state again.
  3. No recovery key: call the vendor's support with the box id below. The data cannot be read
     without the key."""


def locked_reason(status_file: Path = STATUS_FILE) -> str | None:
    """The data volume's "locked: ..." state, or None when it is not locked (or not managed)."""
    try:
        status = status_file.read_text().strip()
    except OSError:
        return None
    return status if status.startswith("locked") else None


def request_recovery(key: str, request_file: Path = REQUEST_FILE) -> None:
    """Hand the recovery key to the privileged data-volume service (0600, replaced atomically)."""
    key = key.strip().lower()
    if not RECOVERY_KEY.match(key):
        raise ValueError(
            "that is not a recovery key: it has 8 groups of 8 letters separated by dashes "
            "(only c b d e f g h i j k l n r t u v). Check what was recorded and type it again."
        )
    tmp = request_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(request_file)


class LockedConsole(App[None]):
    """Shown instead of the login while the data volume is locked."""

    CSS = """
    Screen { align: center middle; }
    #locked { width: 100; height: auto; border: heavy $error; padding: 1 2; }
    #title { text-style: bold; color: $error; }
    #result { margin-top: 1; }
    """

    def __init__(self, reason: str, box_id: str, status_file: Path = STATUS_FILE,
                 request_file: Path = REQUEST_FILE) -> None:  # fmt: skip
        super().__init__()
        self.reason, self.box_id = reason, box_id
        self.status_file, self.request_file = status_file, request_file

    def compose(self) -> ComposeResult:
        with Vertical(id="locked"):
            yield Static("DATA VOLUME LOCKED - recovery key needed", id="title")
            yield Static(EXPLANATION)
            yield Static(f"\nBox id: {self.box_id}    State: {self.reason}", id="state")
            yield Input(placeholder="recovery key (xxxxxxxx-xxxxxxxx-...)", id="key")
            yield Button("Unlock with the recovery key", variant="error", id="unlock")
            yield Static("", id="result")

    def on_mount(self) -> None:
        self.query_one("#key", Input).focus()
        self.set_interval(2.0, self.poll)

    def on_input_submitted(self) -> None:
        self.submit()

    def on_button_pressed(self) -> None:
        self.submit()

    def submit(self) -> None:
        field = self.query_one("#key", Input)
        result = self.query_one("#result", Static)
        try:
            request_recovery(field.value, self.request_file)
        except ValueError as exc:
            result.update(str(exc))
            return
        except OSError as exc:
            result.update(f"could not hand the key over ({exc.strerror}); restart the box.")
            return
        field.value = ""
        result.update("Unlocking with the recovery key...")

    def poll(self) -> None:
        reason = locked_reason(self.status_file)
        if reason is None:
            self.exit()  # unlocked: the console service restarts into the normal login
        elif reason != self.reason:
            self.reason = reason
            self.query_one("#result", Static).update(reason)
