"""The self-test: every installed model's active slot run on its signed reference set here.

The same gate an update passes before it goes live (``appliance.updates.validate``), run again at
the end of provisioning on this box's device, so a box is handed over only when every model still
scores what its vendor claims. Results are kept (``selftest.json``) for the health report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from appliance.config import Config
from appliance.errors import ApplianceError
from appliance.fsutil import atomic_write
from appliance.store.slots import ModelStore
from appliance.updates.manifest import MANIFEST_NAME, MODEL_BIN, MODEL_XML, parse_manifest


@dataclass(frozen=True)
class ModelCheck:
    model: str
    version: str
    slot: str
    passed: bool
    reason: str  # the gate's one line: metric, value, expected, device; or the error


@dataclass(frozen=True)
class SelfTest:
    taken_at: float
    checks: tuple[ModelCheck, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


def run_selftest(
    store: ModelStore, key: bytes, core: Any, device: str = "CPU",
    on_model: Callable[[str], None] = lambda _name: None,
) -> SelfTest:  # fmt: skip
    """Validate each model's active slot; a model that fails to load or run fails its check."""
    from appliance.updates.validate import validate

    checks = []
    for name in store.models():
        on_model(name)
        state = store.state(name)
        slot = state.active
        info = state.slots.get(slot) if slot else None
        if slot is None or info is None:
            checks.append(ModelCheck(name, "-", "-", False, "no active slot"))
            continue
        try:
            files = store.load(name, key, slot).files
            manifest = parse_manifest(bytes(files[MANIFEST_NAME]))
            reference = {f: bytes(files[f]) for f in manifest.reference.files}
            result = validate(manifest, bytes(files[MODEL_XML]), files[MODEL_BIN], reference,
                              core=core, device=device)  # fmt: skip
            checks.append(ModelCheck(name, info.version, slot, result.passed, result.reason))
        except ApplianceError as exc:
            checks.append(ModelCheck(name, info.version, slot, False, exc.message))
    return SelfTest(time.time(), tuple(checks))


def save_selftest(config: Config, result: SelfTest) -> None:
    config.provisioning_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    doc = {"taken_at": result.taken_at, "checks": [asdict(c) for c in result.checks]}
    atomic_write(config.provisioning_dir / "selftest.json", json.dumps(doc, indent=2).encode())


def load_selftest(config: Config) -> SelfTest | None:
    try:
        doc = json.loads((config.provisioning_dir / "selftest.json").read_bytes())
        return SelfTest(float(doc["taken_at"]), tuple(ModelCheck(**c) for c in doc["checks"]))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None  # a damaged result is no result: the report says "not run"
