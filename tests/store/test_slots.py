"""The A/B model store: encrypted slots, atomic switch, refusal of swapped or unfinished slots."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from appliance.errors import ModelIntegrityError, StorageError
from appliance.store.slots import ModelStore, SlotName, SlotWriter, StoreError

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


# --- installs streamed into the slot (the update agent's path) ------------------------------------

MIB = 1 << 20


def _stream(store: ModelStore, files: dict[str, bytes], pieces: list[int]) -> SlotWriter:
    """Write ``files`` through a SlotWriter in pieces of the given sizes, in turn."""
    writer = store.begin_install("risk", SlotName.A, key=KEY, version="2.0.0")
    for rel, data in files.items():
        out, at, turn = writer.open(rel, len(data)), 0, 0
        while at < len(data):
            size = pieces[turn % len(pieces)]
            out.write(memoryview(data)[at : at + size])
            at, turn = at + size, turn + 1
        out.close()
    return writer


@pytest.mark.parametrize(
    "pieces",
    [[4 * MIB], [MIB], [1], [MIB - 1, MIB + 1, 7], [3 * MIB + 5, 16]],
    ids=["buffers", "aead-chunks", "bytes", "straddling", "uneven"],
)
def test_files_streamed_in_any_pieces_decrypt_whole(tmp_path: Path, pieces: list[int]) -> None:
    files = {
        "model.bin": os.urandom(3 * MIB + 123),
        "model.xml": os.urandom(MIB),  # exactly one AEAD chunk
        "empty": b"",
        "reference/cases.npz": os.urandom(2 * MIB),
    }
    if pieces == [1]:
        files = {"model.bin": os.urandom(5000), "empty": b""}
    store = ModelStore(tmp_path)
    writer = _stream(store, files, pieces)
    writer.complete("cd" * 32, epoch=3)
    writer.close()
    loaded = store.load("risk", KEY, SlotName.A)
    assert dict(loaded.files) == files
    assert loaded.info.files == tuple(sorted(files)) and loaded.info.epoch == 3


def test_streamed_slot_is_unfinished_until_complete(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    writer = _stream(store, dict(FILES), [100])
    assert store.slot_info("risk", SlotName.A) is None  # every byte is there, no slot.json yet
    with pytest.raises(StoreError, match="no complete install"):
        store.activate("risk", SlotName.A)
    writer.close()
    store.clear("risk", SlotName.A)  # what the agent does when verification fails
    assert not (tmp_path / "risk" / "a").exists()


def test_a_file_cut_short_never_completes_the_slot(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    writer = store.begin_install("risk", SlotName.A, key=KEY, version="2.0.0")
    out = writer.open("model.bin", 3000)
    out.write(FILES["model.bin"][:1000])
    out.close()  # the reader stopped early: no error here, the file stays unfinished
    with pytest.raises(StoreError, match=r"incomplete: model.bin cut short"):
        writer.complete("ab" * 32, epoch=1)
    writer.close()
    assert store.slot_info("risk", SlotName.A) is None


def test_more_bytes_than_announced_are_refused(tmp_path: Path) -> None:
    writer = ModelStore(tmp_path).begin_install("risk", SlotName.A, key=KEY, version="2.0.0")
    out = writer.open("model.bin", 10)
    with pytest.raises(ValueError, match="more than the announced 10 bytes"):
        out.write(bytes(11))
    writer.close()


def test_bundle_paths_that_flatten_to_one_file_are_refused(tmp_path: Path) -> None:
    writer = ModelStore(tmp_path).begin_install("risk", SlotName.A, key=KEY, version="2.0.0")
    writer.open("reference/cases.npz", 3).close()
    with pytest.raises(StorageError, match=r"reference__cases.npz.enc"):
        writer.open("reference__cases.npz", 3)  # would overwrite the first one's file
    with pytest.raises(StoreError, match="twice"):
        writer.open("reference/cases.npz", 3)
    writer.close()


def test_begin_install_clears_what_the_slot_held(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    _install(store, SlotName.A, "1.0.0")
    store.begin_install("risk", SlotName.A, key=KEY, version="2.0.0").close()
    assert store.slot_info("risk", SlotName.A) is None
    assert list((tmp_path / "risk" / "a").iterdir()) == []
