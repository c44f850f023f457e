"""Per-model A/B slots on disk, every file encrypted under the TPM-sealed model-store key.

Layout under the store root (``<state>/models``)::

    <model>/state.json            which slot is active, the previous one, a generation number
    <model>/<slot>/slot.json      what the slot holds (version, bundle digest, files, epoch);
                                  written last, so a slot without it is an unfinished install
    <model>/<slot>/<file>.enc     each bundle file, AES-256-GCM STREAM (appliance.trust.aead)

An install writes its files in place as their bytes arrive (the update agent streams them while
it verifies the bundle), fsyncs each once, then writes ``slot.json``; until then the slot is
unfinished and never loaded or activated, and a failed install is undone by clearing it.

Each file is encrypted with ``<model>/<file>`` and the version bound in, so a file cannot be
swapped for another file, model or version. ``state.json`` is replaced atomically: the active slot
switches in one rename, and a power cut leaves either the old or the new slot active.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import cast

from appliance.errors import ApplianceError, StorageError
from appliance.fsutil import atomic_write, fsync_dir
from appliance.trust import aead

Progress = Callable[[int, int], None]
WRITEBACK_STEP = 16 << 20  # how often a slot file asks for early write-out (see _SlotFile)
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start write-out of dirty pages, do not wait


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

    def begin_install(self, name: str, slot: SlotName, *, key: bytes, version: str) -> SlotWriter:
        """Clear ``slot`` and return a writer that encrypts files into it as they arrive."""
        self.clear(name, slot)
        folder = self.root / name / slot
        try:
            folder.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            raise _storage_error(folder, exc) from exc
        return SlotWriter(folder, name, key=key, version=version)

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
        total, done = sum(len(d) for d in files.values()), 0
        with contextlib.closing(self.begin_install(name, slot, key=key, version=version)) as slot_w:
            for rel, data in sorted(files.items()):
                with contextlib.closing(slot_w.open(rel, len(data))) as out:
                    out.write(data)
                done += len(data)
                if progress:
                    progress(done, total)
            return slot_w.complete(bundle_sha256, epoch)

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


class SlotWriter:
    """One install going into a cleared slot, each file encrypted as its bytes arrive.

    The files are written in place: the slot counts as unfinished (never loaded or activated)
    until :meth:`complete` has made every file durable and written ``slot.json``, so bytes that
    turn out bad are harmless there. Whoever began the install must :meth:`close` the writer and,
    unless ``complete`` returned, clear the slot.
    """

    def __init__(self, folder: Path, name: str, *, key: bytes, version: str) -> None:
        self.folder, self.name, self.version = folder, name, version
        self._key = key
        self._files: dict[str, _SlotFile] = {}

    def open(self, rel: str, length: int) -> _SlotFile:
        """A writer for the file ``rel`` (a bundle-relative path) of exactly ``length`` bytes."""
        path = self.folder / (_flat(rel) + ".enc")
        if rel in self._files:
            raise StoreError(f"'{rel}' is written into slot {self.folder} twice.")
        model = f"{self.name}/{rel}"
        encryptor = aead.StreamEncryptor(
            self._key, model=model, version=self.version, length=length
        )
        self._files[rel] = _SlotFile(path, encryptor)
        return self._files[rel]

    def complete(self, bundle_sha256: str, epoch: int) -> SlotInfo:
        """Make every file durable (one fsync each), then mark the slot complete."""
        short = sorted(rel for rel, f in self._files.items() if not f.finished)
        if short:
            raise StoreError(f"slot {self.folder} is incomplete: {', '.join(short)} cut short.")
        for file in self._files.values():
            file.sync()
        # The names too, and the slot folder's own entry, before slot.json can claim them.
        fsync_dir(self.folder)
        fsync_dir(self.folder.parent)
        info = SlotInfo(self.version, bundle_sha256, epoch, tuple(sorted(self._files)), time.time())
        atomic_write(self.folder / "slot.json", info.to_json())
        return info

    def close(self) -> None:
        """Release the open files (a completed slot has none left)."""
        for file in self._files.values():
            file.release()


class _SlotFile:
    """One encrypted file of a slot; the descriptor stays open for the fsync in ``complete``.

    Every ``WRITEBACK_STEP`` bytes it asks the kernel to start writing them out, so that the
    fsync at the end waits for the last few MiB instead of the whole model (measured on the
    bench box: the fsync of 210 MB drops from ~65 ms to a few ms, and the write-out overlaps the
    hashing). That request promises nothing; durability comes from the fsync alone.
    """

    def __init__(self, path: Path, encryptor: aead.StreamEncryptor) -> None:
        self.path, self.finished = path, False
        self._encryptor = encryptor
        self._written = self._kicked = 0
        try:  # O_EXCL: a fresh slot; two bundle paths that flatten alike must not overwrite
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _storage_error(path, exc) from exc
        self._put(encryptor.header)

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        self._put(self._encryptor.update(data))
        if self._written - self._kicked >= WRITEBACK_STEP:
            _start_writeback(self._fd, self._kicked, self._written - self._kicked)
            self._kicked = self._written
        return len(data)

    def close(self) -> None:
        """Seal the last chunk; a file cut short (the reader stopped early) stays unfinished."""
        if self.finished or self._fd < 0:
            return
        try:
            tail = self._encryptor.finish()
        except ValueError:
            return
        self._put(tail)
        self.finished = True
        _start_writeback(self._fd, self._kicked, self._written - self._kicked)  # the tail, now

    def sync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise _storage_error(self.path, exc) from exc
        self.release()

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _put(self, data: memoryview | bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                done = os.write(self._fd, view)
                self._written += done
                view = view[done:]
        except OSError as exc:
            raise _storage_error(self.path, exc) from exc


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing out a file range now, without waiting: a hint, errors are ignored."""
    call = _sync_file_range()
    if call is not None:
        call(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's sync_file_range from libc (the os module lacks it), or None elsewhere."""
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    call.restype = ctypes.c_int
    return cast("Callable[[int, int, int, int], int]", call)


def _storage_error(path: Path, exc: OSError) -> StorageError:
    return StorageError(
        f"cannot write {path}: {exc.strerror or exc}.",
        "Check that the model store is writable and the disk is not full.",
    )


def _flat(rel: str) -> str:
    """A bundle-relative path as one file name (bundle paths are checked components already)."""
    return rel.replace("/", "__")
