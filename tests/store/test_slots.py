"""The A/B model store: encrypted slots, atomic switch, refusal of swapped or unfinished slots."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from appliance.errors import ModelIntegrityError
from appliance.store.slots import ModelStore, SlotName, StoreError

KEY = os.urandom(32)
FILES = {"model.xml": b"<net/>", "model.bin": os.urandom(3000), "reference/cases.npz": b"npz"}


def _install(store: ModelStore, slot: SlotName, version: str) -> None:
    store.install("risk", slot, FILES, key=KEY, version=version, bundle_sha256="ab" * 32, epoch=1)


def test_install_activate_and_load(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    assert store.state("risk").inactive is SlotName.A
    _install(store, SlotName.A, "1.0.0")
    state = store.activate("risk", SlotName.A)
    assert state.active is SlotName.A and state.inactive is SlotName.B and state.generation == 1
    loaded = store.load("risk", KEY)
    assert dict(loaded.files) == FILES
    assert store.models() == ["risk"]


def test_files_are_encrypted_at_rest(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _install(store, SlotName.A, "1.0.0")
    for path in (tmp_path / "risk" / "a").iterdir():
        assert FILES["model.bin"][:64] not in path.read_bytes()


def test_switch_keeps_the_previous_slot(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _install(store, SlotName.A, "1.0.0")
    store.activate("risk", SlotName.A)
    _install(store, SlotName.B, "1.1.0")
    state = store.activate("risk", SlotName.B)
    assert (state.active, state.previous) == (SlotName.B, SlotName.A)
    assert store.load("risk", KEY).info.version == "1.1.0"


def test_a_file_swapped_between_slots_is_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _install(store, SlotName.A, "1.0.0")
    _install(store, SlotName.B, "1.1.0")
    store.activate("risk", SlotName.B)
    shutil.copy(tmp_path / "risk/a/model.bin.enc", tmp_path / "risk/b/model.bin.enc")
    with pytest.raises(ModelIntegrityError):
        store.load("risk", KEY)


def test_files_swapped_within_a_slot_are_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _install(store, SlotName.A, "1.0.0")
    store.activate("risk", SlotName.A)
    folder = tmp_path / "risk/a"
    shutil.copy(folder / "model.xml.enc", folder / "model.bin.enc")
    with pytest.raises(ModelIntegrityError):
        store.load("risk", KEY)


def test_unfinished_install_is_never_activated(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _install(store, SlotName.A, "1.0.0")
    (tmp_path / "risk/a/slot.json").unlink()  # power cut before the slot was complete
    with pytest.raises(StoreError, match="no complete install"):
        store.activate("risk", SlotName.A)


def test_the_active_slot_cannot_be_cleared(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _install(store, SlotName.A, "1.0.0")
    store.activate("risk", SlotName.A)
    with pytest.raises(StoreError, match="is active"):
        store.clear("risk", SlotName.A)
    store.clear("risk", SlotName.B)  # clearing an empty slot is fine


def test_loading_a_model_that_is_not_installed_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="appliance update install"):
        ModelStore(tmp_path).load("nothing", KEY)
