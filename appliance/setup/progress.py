"""The wizard's progress: which steps are done, kept as one atomically replaced JSON file.

A step is recorded only after everything it wrote is durable, so after a power cut the wizard
resumes at the first step not recorded and redoes at most that one step (each is idempotent or
checks what is already there, e.g. an enrolled TPM).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from appliance.config import Config
from appliance.errors import StorageError
from appliance.fsutil import atomic_write


class Step(StrEnum):
    """The wizard's steps, in the order they run."""

    SITE = "site"
    NETWORK = "network"
    TIME = "time"
    TRUST = "trust"  # before the admin: accounts are audited, and the audit key is sealed here
    ADMIN = "admin"
    VENDOR_ROOT = "vendor-root"
    PEERS = "peers"
    SELF_TEST = "self-test"


STEPS: tuple[Step, ...] = tuple(Step)
TITLES: Mapping[Step, str] = {
    Step.SITE: "Site and box identity",
    Step.NETWORK: "Network",
    Step.TIME: "Time zone and clock",
    Step.TRUST: "TPM enrollment and recovery codes",
    Step.ADMIN: "First admin account",
    Step.VENDOR_ROOT: "Vendor root of trust",
    Step.PEERS: "PACS peers",
    Step.SELF_TEST: "Self-test of the installed models",
}


@dataclass(frozen=True)
class WizardProgress:
    """Steps done (in order) with a one-line note each, for the summary and the resume notice."""

    done: Mapping[Step, str] = field(default_factory=dict)
    started: bool = False  # a progress file exists: the wizard ran on this box

    @property
    def next_step(self) -> Step | None:
        return next((s for s in STEPS if s not in self.done), None)

    @property
    def finished(self) -> bool:
        return self.next_step is None

    def complete(self, step: Step, note: str) -> WizardProgress:
        return replace(self, done={**self.done, step: note}, started=True)


def progress_file(config: Config) -> Path:
    return config.provisioning_dir / "wizard.json"


def load_progress(config: Config) -> WizardProgress:
    """The recorded progress (nothing done when the file does not exist yet)."""
    path = progress_file(config)
    try:
        doc = json.loads(path.read_bytes())
        done = {Step(s["step"]): str(s["note"]) for s in doc["done"]}
    except FileNotFoundError:
        return WizardProgress()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StorageError(
            f"the provisioning progress {path} is damaged ({exc}).",
            "Remove it and run the wizard again: every step checks what is already set up.",
        ) from exc
    return WizardProgress(done=done, started=True)


def record_step(config: Config, step: Step, note: str) -> WizardProgress:
    """Mark ``step`` done (fsynced, atomic) and return the new progress."""
    progress = load_progress(config).complete(step, note)
    doc = {
        "done": [{"step": s.value, "note": n} for s, n in progress.done.items()],
        "updated": time.time(),
    }
    config.provisioning_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(progress_file(config), json.dumps(doc, indent=2).encode() + b"\n", mode=0o600)
    return progress
