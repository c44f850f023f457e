"""Per-model A/B slots on disk, every file encrypted under the TPM-sealed model-store key.

Layout under the store root (``<state>/models``)::

    <model>/state.json            which slot is active, the previous one, a generation number
    <model>/<slot>/slot.json      what the slot holds (version, bundle digest, files, epoch);
                                  written last, so a slot without it is an unfinished install
    <model>/<slot>/<file>.enc     each bundle file, AES-256-GCM STREAM (appliance.trust.aead)

Each file is encrypted with ``<model>/<file>`` and the version bound in, so a file cannot be
swapped for another file, model or version. ``state.json`` is replaced atomically: the active slot
switches in one rename, and a power cut leaves either the old or the new slot active.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from appliance.errors import ApplianceError, StorageError
from appliance.fsutil import atomic_write, atomic_writer, fsync_dir
from appliance.trust import aead

Progress = Callable[[int, int], None]


class SlotName(StrEnum):
    A = "a"
    B = "b"

    @property
    def other(self) -> SlotName:
        return SlotName.B if self is SlotName.A else SlotName.A


class StoreError(ApplianceError):
    """The model store cannot do what was asked (no such model, empty slot...)."""


@dataclass(frozen=True)
class SlotInfo:
    """What a complete slot holds."""

    version: str
    bundle_sha256: str
    epoch: int
    files: tuple[str, ...]
    installed_at: float

    def to_json(self) -> bytes:
        doc = {
            "version": self.version, "bundle_sha256": self.bundle_sha256, "epoch": self.epoch,
            "files": list(self.files), "installed_at": self.installed_at,
        }  # fmt: skip
        return json.dumps(doc, indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SlotInfo:
        doc = json.loads(data)
        return cls(
            version=str(doc["version"]),
            bundle_sha256=str(doc["bundle_sha256"]),
            epoch=int(doc["epoch"]),
            files=tuple(str(f) for f in doc["files"]),
            installed_at=float(doc["installed_at"]),
        )


@dataclass(frozen=True)
class ModelState:
    """A model's slots: which is active, which was active before, and what each holds."""

    name: str
    active: SlotName | None
    previous: SlotName | None
    generation: int
    slots: Mapping[SlotName, SlotInfo | None] = field(default_factory=dict)

    @property
    def inactive(self) -> SlotName:
        """Where the next install goes: the slot that is not active."""
        return self.active.other if self.active else SlotName.A


@dataclass(frozen=True)
class LoadedSlot:
    """A slot's files decrypted into memory."""

    name: str
    slot: SlotName
    info: SlotInfo
    files: Mapping[str, bytearray]


class ModelStore:
    """The slots of every model under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "state.json").exists())

    def state(self, name: str) -> ModelState:
        """The model's slot state (an unknown model has no active slot)."""
        folder = self.root / name
        try:
            doc = json.loads((folder / "state.json").read_bytes())
        except FileNotFoundError:
            doc = {"active": None, "previous": None, "generation": 0}
        except ValueError as exc:
            raise StorageError(
                f"the slot state of model '{name}' is damaged.",
                "Reinstall the model from its signed bundle.",
            ) from exc
        slots = {s: self.slot_info(name, s) for s in SlotName}
        active = SlotName(doc["active"]) if doc["active"] else None
        previous = SlotName(doc["previous"]) if doc.get("previous") else None
        return ModelState(name, active, previous, int(doc["generation"]), slots)

    def slot_info(self, name: str, slot: SlotName) -> SlotInfo | None:
        """A complete slot's description, or None for an empty or unfinished slot."""
        try:
            return SlotInfo.from_json((self.root / name / slot / "slot.json").read_bytes())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return None  # a damaged description counts as unfinished: never activated

    def clear(self, name: str, slot: SlotName) -> None:
        """Empty a slot (an unfinished or rolled-back install); refuses the active slot."""
        if self.state(name).active is slot:
            raise StoreError(f"slot {slot} of '{name}' is active and cannot be cleared.")
        folder = self.root / name / slot
        if folder.exists():
            (folder / "slot.json").unlink(missing_ok=True)  # first: the slot is unfinished now
            fsync_dir(folder)
            shutil.rmtree(folder)
            fsync_dir(folder.parent)

    def install(
        self,
        name: str,
        slot: SlotName,
        files: Mapping[str, bytes | bytearray],
        *,
        key: bytes,
        version: str,
        bundle_sha256: str,
        epoch: int,
        progress: Progress | None = None,
    ) -> SlotInfo:
        """Encrypt ``files`` into the (cleared) slot; the slot is complete when this returns."""
        self.clear(name, slot)
        folder = self.root / name / slot
        folder.mkdir(parents=True, mode=0o700)
        total, done = sum(len(d) for d in files.values()), 0
        for rel, data in sorted(files.items()):
            target = folder / (_flat(rel) + ".enc")
            with atomic_writer(target) as out:
                aead.encrypt_stream(
                    key, io.BytesIO(data), out, model=f"{name}/{rel}", version=version,
                    length=len(data),
                )  # fmt: skip
            done += len(data)
            if progress:
                progress(done, total)
        info = SlotInfo(version, bundle_sha256, epoch, tuple(sorted(files)), time.time())
        atomic_write(folder / "slot.json", info.to_json())
        return info

    def activate(self, name: str, slot: SlotName) -> ModelState:
        """Make ``slot`` the active one in a single atomic rename."""
        if self.slot_info(name, slot) is None:
            raise StoreError(f"slot {slot} of '{name}' holds no complete install.")
        current = self.state(name)
        if current.active is slot:
            return current
        doc = {
            "active": slot.value,
            "previous": current.active,
            "generation": current.generation + 1,
        }
        atomic_write(self.root / name / "state.json", json.dumps(doc).encode())
        return self.state(name)

    def load(self, name: str, key: bytes, slot: SlotName | None = None) -> LoadedSlot:
        """Decrypt a slot (the active one by default) into memory; raises ModelIntegrityError."""
        state = self.state(name)
        slot = slot or state.active
        info = self.slot_info(name, slot) if slot else None
        if slot is None or info is None:
            raise StoreError(
                f"model '{name}' has no installed slot to load.",
                "Install it from a signed bundle: `appliance update install PATH`.",
            )
        folder = self.root / name / slot
        files = {
            rel: aead.decrypt_file(
                key, folder / (_flat(rel) + ".enc"), model=f"{name}/{rel}", version=info.version
            )
            for rel in info.files
        }
        return LoadedSlot(name, slot, info, files)


def _flat(rel: str) -> str:
    """A bundle-relative path as one file name (bundle paths are checked components already)."""
    return rel.replace("/", "__")
