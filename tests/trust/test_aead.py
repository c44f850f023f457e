"""Threat scenarios for encrypted models at rest (appliance.trust.aead).

Small chunks (64 bytes) keep every file a few chunks long and the whole module well under a second.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import struct
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.errors import ModelIntegrityError, StorageError
from appliance.trust.aead import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    decrypt_file,
    decrypt_stream,
    encrypt_file,
    encrypt_stream,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
MODEL, VERSION = "chest-ct", "1.2.0"
CHUNK = 64
HEADER = 28
STRIDE = CHUNK + 16  # a full chunk on disk: ciphertext and tag
DATA = random.Random(0).randbytes(5 * CHUNK + 17)  # six chunks, the last one short
SOURCES = ["bytes", "file", "pipe"]


def seal(
    data: bytes = DATA,
    *,
    key: bytes = KEY,
    model: str = MODEL,
    version: str = VERSION,
    chunk_size: int = CHUNK,
) -> bytes:
    out = io.BytesIO()
    written = encrypt_stream(
        key, io.BytesIO(data), out, model=model, version=version, chunk_size=chunk_size
    )
    assert written == len(out.getvalue())
    return out.getvalue()


def unseal(
    blob: bytes, *, key: bytes = KEY, model: str = MODEL, version: str = VERSION
) -> bytearray:
    return decrypt_stream(key, io.BytesIO(blob), model=model, version=version)


def chunk(index: int) -> slice:
    return slice(HEADER + index * STRIDE, HEADER + (index + 1) * STRIDE)


def flip(blob: bytes, position: int, mask: int = 0x01) -> bytes:
    changed = bytearray(blob)
    changed[position] ^= mask
    return bytes(changed)


@contextlib.contextmanager
def source(kind: str, blob: bytes, tmp_path: Path) -> Iterator[BinaryIO]:
    """Yield ``blob`` as an in-memory stream, a real file, or a real pipe (size unknowable)."""
    if kind == "bytes":
        yield io.BytesIO(blob)
    elif kind == "file":
        path = tmp_path / "model.apm"
        path.write_bytes(blob)
        with path.open("rb") as fh:
            yield fh
    else:
        assert len(blob) < 60_000  # fits the kernel's pipe buffer, so no writer thread is needed
        read_end, write_end = os.pipe()
        os.write(write_end, blob)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as fh:
            yield fh


def refused(kind: str, blob: bytes, tmp_path: Path, match: str) -> None:
    with source(kind, blob, tmp_path) as src, pytest.raises(ModelIntegrityError, match=match):
        decrypt_stream(KEY, src, model=MODEL, version=VERSION)


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, len(DATA)])
def test_roundtrip(size: int) -> None:
    blob = seal(DATA[:size])
    chunks = max(1, -(-size // CHUNK))
    assert len(blob) == HEADER + size + 16 * chunks
    plain = unseal(blob)
    assert isinstance(plain, bytearray)
    assert plain == DATA[:size]


@pytest.mark.parametrize("kind", SOURCES)
def test_roundtrip_from_every_kind_of_source(kind: str, tmp_path: Path) -> None:
    with source(kind, seal(), tmp_path) as src:
        assert decrypt_stream(KEY, src, model=MODEL, version=VERSION) == DATA


def test_file_roundtrip_uses_the_default_chunk_size(tmp_path: Path) -> None:
    plain, encrypted = tmp_path / "model.bin", tmp_path / "model.apm"
    plain.write_bytes(DATA)
    encrypt_file(KEY, plain, encrypted, model=MODEL, version=VERSION)
    assert encrypted.read_bytes()[9:13] == struct.pack(">I", DEFAULT_CHUNK_SIZE)
    assert decrypt_file(KEY, encrypted, model=MODEL, version=VERSION) == DATA


def test_unseekable_source_must_announce_its_length(tmp_path: Path) -> None:
    with source("pipe", DATA, tmp_path) as src, pytest.raises(ValueError, match="length="):
        encrypt_stream(KEY, src, io.BytesIO(), model=MODEL, version=VERSION)
    out = io.BytesIO()
    with source("pipe", DATA, tmp_path) as src:
        encrypt_stream(KEY, src, out, model=MODEL, version=VERSION, length=len(DATA))
    assert unseal(out.getvalue()) == DATA


@pytest.mark.parametrize("announced", [len(DATA) - 1, len(DATA) + 1])
def test_source_not_matching_its_announced_length_is_a_programming_error(announced: int) -> None:
    with pytest.raises(ValueError, match="announced"):
        encrypt_stream(
            KEY, io.BytesIO(DATA), io.BytesIO(), model=MODEL, version=VERSION, length=announced
        )


def test_bit_flip_in_any_chunk_is_refused() -> None:
    blob = seal()
    for index in range(6):
        start = chunk(index).start
        last_byte = len(blob) - 1 if index == 5 else chunk(index).stop - 1
        for position in (start, start + 7, last_byte):  # ciphertext and tag alike
            with pytest.raises(ModelIntegrityError, match=f"chunk {index} of model 'chest-ct'"):
                unseal(flip(blob, position))


@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize(
    ("cut", "match"),
    [
        (HEADER + 2 * STRIDE + 10, "chunk 2 is cut short"),
        (HEADER + 2 * STRIDE, "chunk 2 is missing"),
        (HEADER + 5 * STRIDE, "chunk 5 is missing"),  # every chunk but the flagged last one
        (HEADER, "chunk 0 is missing"),
        (HEADER - 1, "its header is cut short"),
        (-1, "chunk 5 is cut short"),
    ],
)
def test_truncated_file_is_refused(kind: str, cut: int, match: str, tmp_path: Path) -> None:
    refused(kind, seal()[:cut], tmp_path, match=f"truncated: {match}")


def test_file_cut_at_chunk_boundary_with_its_length_rewritten_is_refused() -> None:
    blob = seal()[: HEADER + 3 * STRIDE]
    forged = blob[:20] + struct.pack(">Q", 3 * CHUNK) + blob[HEADER:]
    with pytest.raises(ModelIntegrityError, match="chunk 0 .* failed authentication"):
        unseal(forged)


def test_reordered_chunks_are_refused() -> None:
    blob = seal()
    swapped = bytearray(blob)
    swapped[chunk(1)], swapped[chunk(2)] = blob[chunk(2)], blob[chunk(1)]
    with pytest.raises(ModelIntegrityError, match="chunk 1 .* failed authentication"):
        unseal(bytes(swapped))
    repeated = bytearray(blob)
    repeated[chunk(3)] = blob[chunk(2)]
    with pytest.raises(ModelIntegrityError, match="chunk 3 .* failed authentication"):
        unseal(bytes(repeated))


def test_equal_chunks_never_share_a_keystream() -> None:
    """Each chunk has a nonce of its own: repeated plaintext (zero padding in weights is common)
    must not give repeated ciphertext, which would also show that the GCM keystream repeats."""
    blob = seal(bytes(3 * CHUNK))
    bodies = [blob[chunk(i)][:CHUNK] for i in range(3)]
    assert len(set(bodies)) == 3
    again = seal(bytes(3 * CHUNK))  # and a new file of the same model never reuses one either
    assert not {again[chunk(i)][:CHUNK] for i in range(3)} & set(bodies)


@pytest.mark.parametrize(
    ("model", "version"), [("head-ct", VERSION), (MODEL, "1.2.1"), (MODEL, VERSION)]
)
def test_chunk_swapped_from_another_model_is_refused(model: str, version: str) -> None:
    # Same key, same length; the last case is another encryption of the same model and version.
    ours = bytearray(seal())
    theirs = seal(random.Random(1).randbytes(len(DATA)), model=model, version=version)
    ours[chunk(2)] = theirs[chunk(2)]
    with pytest.raises(ModelIntegrityError, match="chunk 2 .* failed authentication"):
        unseal(bytes(ours))


@pytest.mark.parametrize(("model", "version"), [("head-ct", VERSION), (MODEL, "1.2.1")])
def test_file_presented_as_another_model_is_refused(model: str, version: str) -> None:
    with pytest.raises(ModelIntegrityError, match="chunk 0 .* failed authentication"):
        unseal(seal(), model=model, version=version)


def test_model_and_version_cannot_be_shifted_into_each_other() -> None:
    with pytest.raises(ModelIntegrityError, match="failed authentication"):
        unseal(seal(model="chest", version="-ct1.2.0"), model="chest-ct", version="1.2.0")


def test_header_tampering_is_refused() -> None:
    blob = seal()
    for position in range(HEADER):
        for mask in (0x01, 0x80, 0xFF):
            with pytest.raises(ModelIntegrityError):
                unseal(flip(blob, position, mask))


@pytest.mark.parametrize(
    ("offset", "value", "match"),
    [
        (0, b"APLMODEM", "not a model file: bad magic"),
        (8, b"\x02", "unsupported format version 2"),
        (9, struct.pack(">I", 0), "absurd chunk size 0"),
        (9, struct.pack(">I", MAX_CHUNK_SIZE + 1), "absurd chunk size"),
    ],
)
def test_implausible_header_is_refused(offset: int, value: bytes, match: str) -> None:
    blob = bytearray(seal())
    blob[offset : offset + len(value)] = value
    with pytest.raises(ModelIntegrityError, match=match):
        unseal(bytes(blob))


@pytest.mark.parametrize("blob", [b"", b"PK\x03\x04" + bytes(100), bytes(200)])
def test_file_that_is_not_a_model_is_refused(blob: bytes) -> None:
    with pytest.raises(ModelIntegrityError, match="not a model file: bad magic"):
        unseal(blob)


@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize("extra", [b"\x00", seal()[chunk(5).start :]])
def test_trailing_garbage_is_refused(kind: str, extra: bytes, tmp_path: Path) -> None:
    refused(kind, seal() + extra, tmp_path, match="unexpected bytes after its last chunk")


def test_wrong_key_is_refused() -> None:
    with pytest.raises(ModelIntegrityError, match="chunk 0 .* failed authentication"):
        unseal(seal(), key=OTHER_KEY)


def test_key_that_is_not_aes256_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        seal(key=KEY[:16])
    with pytest.raises(ValueError, match="32 bytes"):
        unseal(seal(), key=KEY[:16])


@pytest.mark.parametrize("chunk_size", [0, MAX_CHUNK_SIZE + 1])
def test_absurd_chunk_size_is_a_programming_error(chunk_size: int) -> None:
    with pytest.raises(ValueError, match="chunk size"):
        seal(chunk_size=chunk_size)


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=600),
    chunk_size=st.integers(1, 200),
    model=st.text(max_size=20),
    version=st.text(max_size=10),
)
def test_roundtrip_property(data: bytes, chunk_size: int, model: str, version: str) -> None:
    blob = seal(data, model=model, version=version, chunk_size=chunk_size)
    assert unseal(blob, model=model, version=version) == data


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=300),
    chunk_size=st.integers(1, 100),
    where=st.data(),
)
def test_any_single_byte_flip_anywhere_is_refused(
    data: bytes, chunk_size: int, where: st.DataObject
) -> None:
    blob = seal(data, chunk_size=chunk_size)
    position = where.draw(st.integers(0, len(blob) - 1), label="position")
    mask = where.draw(st.integers(1, 255), label="mask")
    with pytest.raises(ModelIntegrityError):
        unseal(flip(blob, position, mask))


def test_plaintext_never_written_to_disk(tmp_path: Path) -> None:
    plain, store = tmp_path / "model.bin", tmp_path / "store"
    plain.write_bytes(DATA)
    encrypt_file(KEY, plain, store / "chest-ct.apm", model=MODEL, version=VERSION)
    plain.unlink()
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    assert decrypt_file(KEY, store / "chest-ct.apm", model=MODEL, version=VERSION) == DATA
    after = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    assert after == before
    assert all(DATA[:32] not in content for content in after.values())


@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize(("chunk_size", "length"), [(4096, 1 << 40), (1, (1 << 64) - 1)])
def test_forged_huge_length_is_refused_without_allocating(
    kind: str, chunk_size: int, length: int, tmp_path: Path
) -> None:
    header = struct.pack(">8sBI7sQ", b"APLMODEL", 1, chunk_size, bytes(7), length)
    forged = header + bytes(100)  # less than one chunk, whatever the source
    tracemalloc.start()
    try:
        refused(kind, forged, tmp_path, match="chunk 0 is cut short|absurd length")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_failed_encryption_leaves_the_old_file_untouched(tmp_path: Path) -> None:
    plain, encrypted = tmp_path / "model.bin", tmp_path / "model.apm"
    plain.write_bytes(DATA)
    encrypted.write_bytes(b"old")
    with pytest.raises(ValueError, match="32 bytes"):
        encrypt_file(KEY[:16], plain, encrypted, model=MODEL, version=VERSION)
    assert encrypted.read_bytes() == b"old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.apm", "model.bin"]


def test_missing_files_are_storage_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot read the model"):
        encrypt_file(KEY, tmp_path / "absent.bin", tmp_path / "m.apm", model=MODEL, version="1")
    with pytest.raises(StorageError, match="cannot read model file"):
        decrypt_file(KEY, tmp_path / "absent.apm", model=MODEL, version="1")
