"""Streaming encryption of model files at rest: AES-256-GCM in the STREAM construction.

A model is kept encrypted on disk so that a copied disk yields nothing and an edited file is
refused. Decryption happens in memory only: :func:`decrypt_file` returns a ``bytearray`` that
OpenVINO reads from; the plaintext never touches disk.

File format, all integers big-endian::

    header  = b"APLMODEL" | format version (u8) = 1 | chunk size (u32)
              | nonce prefix (7 random bytes, fresh per file) | plaintext length (u64)
    chunk i = AES-256-GCM(key, nonce_i, plaintext_i, ad_i)        ciphertext || 16-byte tag
    nonce_i = nonce prefix | i (u32) | last (u8): 0x01 on the final chunk, 0x00 before it
    ad_i    = header | len(model) (u32) | model (UTF-8) | len(version) (u32) | version | i (u64)

Every chunk holds ``chunk size`` plaintext bytes except the last, which holds the rest (an empty
model is one empty chunk), so the chunk count follows from the plaintext length.

This is the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár (CRYPTO 2015). The index
in the nonce refuses reordered, dropped or repeated chunks; the last-chunk flag refuses a file cut
at a chunk boundary or extended past its end; the header and the model identity in the associated
data refuse any header edit and any chunk spliced in from another file, model or version. Nonces
must never repeat under one key: with a 56-bit random prefix, the chance that two of n files share
one is about n**2 / 2**57, below 2**-30 for the few thousand model files a box writes in its life.
"""

from __future__ import annotations

import io
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from appliance.errors import ModelIntegrityError, StorageError
from appliance.fsutil import atomic_writer

MAGIC = b"APLMODEL"
FORMAT_VERSION = 1
KEY_SIZE = 32
TAG_SIZE = 16
DEFAULT_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 64 << 20
_PREFIX_SIZE = 7
_MAX_CHUNKS = 1 << 32  # the chunk index is a u32 in the nonce
_HEADER = struct.Struct(">8sBI7sQ")
_INDEX = struct.Struct(">Q")
_HINT = "Reinstall the model from its signed update bundle."


@dataclass(frozen=True)
class _Header:
    """A parsed header; ``raw`` is its exact bytes, bound into every chunk's associated data."""

    raw: bytes
    chunk_size: int
    prefix: bytes
    length: int

    @property
    def chunks(self) -> int:
        return max(1, -(-self.length // self.chunk_size))

    @property
    def ciphertext_size(self) -> int:
        return self.length + self.chunks * TAG_SIZE

    def plaintext_size(self, index: int) -> int:
        return min(self.chunk_size, self.length - index * self.chunk_size)

    def nonce(self, index: int) -> bytes:
        return self.prefix + struct.pack(">IB", index, index == self.chunks - 1)


def _aesgcm(key: bytes) -> AESGCM:
    if len(key) != KEY_SIZE:
        raise ValueError(f"a model key is {KEY_SIZE} bytes (AES-256), not {len(key)}")
    return AESGCM(key)


def _context(header: _Header, model: str, version: str) -> bytes:
    parts = [header.raw]
    for text in (model, version):
        data = text.encode("utf-8")
        parts += [struct.pack(">I", len(data)), data]
    return b"".join(parts)


def _label(src: BinaryIO) -> str:
    name = getattr(src, "name", None)
    return f"model file {name}" if isinstance(name, str) else "model stream"


def _bytes_left(src: BinaryIO) -> int | None:
    """Return how many bytes ``src`` holds past its position, or None when that is unknowable."""
    try:
        mode = os.fstat(src.fileno()).st_mode
    except (OSError, ValueError):  # io.UnsupportedOperation (BytesIO) is both
        mode = 0
    if stat.S_ISREG(mode):
        return os.fstat(src.fileno()).st_size - src.tell()
    if src.seekable():
        here = src.tell()
        end = src.seek(0, os.SEEK_END)
        src.seek(here)
        return end - here
    return None


def _read_full(src: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``src`` and return how many bytes came before end of file."""
    filled = 0
    while filled < len(view):
        if isinstance(src, io.BufferedIOBase | io.RawIOBase):
            got = src.readinto(view[filled:]) or 0
        else:
            data = src.read(len(view) - filled)
            got = len(data)
            view[filled : filled + got] = data
        if got == 0:
            break
        filled += got
    return filled


def _truncated(label: str, index: int, total: int, *, cut_inside: bool) -> ModelIntegrityError:
    where = f"chunk {index} is cut short" if cut_inside else f"chunk {index} is missing"
    return ModelIntegrityError(
        f"{label} is truncated: {where}, so the file ends without its last-chunk mark"
        f" (expected chunks 0 to {total - 1}).",
        _HINT,
    )


def _trailing(label: str) -> ModelIntegrityError:
    return ModelIntegrityError(f"{label} has unexpected bytes after its last chunk.", _HINT)


def _read_header(src: BinaryIO, label: str) -> _Header:
    """Parse and sanity-check the header; raise ModelIntegrityError for anything implausible."""
    raw = bytearray(_HEADER.size)
    got = _read_full(src, memoryview(raw))
    if raw[: len(MAGIC)] != MAGIC:
        raise ModelIntegrityError(f"{label} is not a model file: bad magic.", _HINT)
    if got < _HEADER.size:
        raise ModelIntegrityError(f"{label} is truncated: its header is cut short.", _HINT)
    _, version, chunk_size, prefix, length = _HEADER.unpack(raw)
    if version != FORMAT_VERSION:
        raise ModelIntegrityError(f"{label} has unsupported format version {version}.", _HINT)
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise ModelIntegrityError(f"{label} announces an absurd chunk size {chunk_size}.", _HINT)
    header = _Header(bytes(raw), chunk_size, prefix, length)
    if header.chunks > _MAX_CHUNKS:
        raise ModelIntegrityError(f"{label} announces an absurd length {length}.", _HINT)
    return header


def _check_size(header: _Header, available: int, label: str) -> None:
    """Refuse a file whose size disagrees with its header, before anything is allocated."""
    if available > header.ciphertext_size:
        raise _trailing(label)
    if available < header.ciphertext_size:
        index, rest = divmod(available, header.chunk_size + TAG_SIZE)
        raise _truncated(label, index, header.chunks, cut_inside=rest > 0)


def encrypt_stream(
    key: bytes,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    model: str,
    version: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    length: int | None = None,
) -> int:
    """Encrypt everything ``src`` holds from its position into ``dst``; return bytes written.

    ``length`` is the plaintext size; when None it is taken from the file size or by seeking.
    Raises ValueError for a key that is not 32 bytes, a chunk size outside 1 B..64 MiB, a source
    whose length cannot be told, or one that yields more or fewer bytes than announced (``dst``
    then holds a partial stream, which :func:`encrypt_file` discards).
    """
    aesgcm = _aesgcm(key)
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size must be 1 to {MAX_CHUNK_SIZE} bytes, not {chunk_size}")
    length = _bytes_left(src) if length is None else length
    if length is None:
        raise ValueError("cannot tell how long the model source is; pass length=")
    if not 0 <= length < 1 << 64:
        raise ValueError(f"a model length must fit in 64 bits, not {length}")
    prefix = os.urandom(_PREFIX_SIZE)
    raw = _HEADER.pack(MAGIC, FORMAT_VERSION, chunk_size, prefix, length)
    header = _Header(raw, chunk_size, prefix, length)
    if header.chunks > _MAX_CHUNKS:
        raise ValueError(f"a model of {length} bytes needs a larger chunk size")
    context = _context(header, model, version)
    dst.write(header.raw)
    buf = memoryview(bytearray(min(chunk_size, length)))
    for index in range(header.chunks):
        size = header.plaintext_size(index)
        if _read_full(src, buf[:size]) < size:
            raise ValueError(f"the model source ended before the announced {length} bytes")
        ad = context + _INDEX.pack(index)
        dst.write(aesgcm.encrypt(header.nonce(index), buf[:size], ad))
    if src.read(1):
        raise ValueError(f"the model source holds more than the announced {length} bytes")
    return len(header.raw) + header.ciphertext_size


def decrypt_stream(key: bytes, src: BinaryIO, *, model: str, version: str) -> bytearray:
    """Decrypt and authenticate a whole model from ``src`` into memory; never write plaintext.

    Raises ModelIntegrityError when the stream is not a model file, is truncated, has trailing
    bytes, was modified or reordered, belongs to another model or version, or was encrypted under
    another key; ValueError for a key that is not 32 bytes.
    """
    aesgcm = _aesgcm(key)
    label = _label(src)
    header = _read_header(src, label)
    available = _bytes_left(src)
    if available is not None:
        _check_size(header, available, label)
    # A source of unknown size (a pipe) grows the output as chunks arrive, so a forged length
    # cannot make us allocate more than the data actually sent. That is also why the output view
    # is taken per chunk: a bytearray cannot grow while a view of it is alive.
    out = bytearray(header.length if available is not None else 0)
    context = _context(header, model, version)
    buf = memoryview(bytearray(min(header.chunk_size, header.length) + TAG_SIZE))
    for index in range(header.chunks):
        start, size = index * header.chunk_size, header.plaintext_size(index)
        got = _read_full(src, buf[: size + TAG_SIZE])
        if got < size + TAG_SIZE:
            raise _truncated(label, index, header.chunks, cut_inside=got > 0)
        if len(out) < start + size:
            out.extend(bytes(size))
        try:
            aesgcm.decrypt_into(
                header.nonce(index),
                buf[: size + TAG_SIZE],
                context + _INDEX.pack(index),
                memoryview(out)[start : start + size],
            )
        except InvalidTag as exc:
            raise ModelIntegrityError(
                f"chunk {index} of model {model!r} {version} ({label}) failed authentication"
                " (modified, reordered, from another model or version, or under another key).",
                _HINT,
            ) from exc
    if src.read(1):
        raise _trailing(label)
    return out


def encrypt_file(
    key: bytes,
    src: Path,
    dst: Path,
    *,
    model: str,
    version: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> None:
    """Encrypt the model file ``src`` into ``dst``, atomically: ``dst`` is whole or untouched.

    Raises StorageError when a file cannot be read or written, ValueError as encrypt_stream does.
    """
    try:
        fin = src.open("rb")
    except OSError as exc:  # a wrong input path, not a full store: say which
        raise StorageError(
            f"cannot read the model {src}: {exc.strerror}.",
            "Name the plaintext model file (model.bin) to encrypt.",
        ) from exc
    try:
        with fin, atomic_writer(dst) as fout:
            encrypt_stream(key, fin, fout, model=model, version=version, chunk_size=chunk_size)
    except OSError as exc:
        raise StorageError(
            f"cannot encrypt model {src} into {dst}: {exc.strerror}.",
            "Check that the model store is writable and the disk is not full.",
        ) from exc


def decrypt_file(key: bytes, path: Path, *, model: str, version: str) -> bytearray:
    """Decrypt the model file at ``path`` into memory, as decrypt_stream does.

    Raises ModelIntegrityError as decrypt_stream does, StorageError when the file cannot be read.
    """
    try:
        with path.open("rb", buffering=0) as fh:
            return decrypt_stream(key, fh, model=model, version=version)
    except OSError as exc:
        raise StorageError(
            f"cannot read model file {path}: {exc.strerror}.",
            "Check that the model store is mounted and readable.",
        ) from exc


class StreamEncryptor:
    """:func:`encrypt_stream` for a producer that pushes the model in pieces: the same format.

    Made for the update agent, which encrypts a bundle's files while it reads and hashes them,
    so there is no source to pull from. Write :attr:`header` first, then whatever
    :meth:`update` and :meth:`finish` return: the chunks each call completed, as a view into one
    reused buffer that the next call overwrites. Whole chunks are sealed straight from the
    caller's buffer with ``encrypt_into``; only bytes that straddle a chunk boundary are copied.
    Raises ValueError as encrypt_stream does, and when more (``update``) or fewer (``finish``)
    bytes than ``length`` arrive.
    """

    def __init__(
        self,
        key: bytes,
        *,
        model: str,
        version: str,
        length: int,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self._aesgcm = _aesgcm(key)
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size must be 1 to {MAX_CHUNK_SIZE} bytes, not {chunk_size}")
        if not 0 <= length < 1 << 64:
            raise ValueError(f"a model length must fit in 64 bits, not {length}")
        prefix = os.urandom(_PREFIX_SIZE)  # fresh per file: the nonces never repeat under a key
        raw = _HEADER.pack(MAGIC, FORMAT_VERSION, chunk_size, prefix, length)
        self._header = _Header(raw, chunk_size, prefix, length)
        if self._header.chunks > _MAX_CHUNKS:
            raise ValueError(f"a model of {length} bytes needs a larger chunk size")
        self._context = _context(self._header, model, version)
        self._index = 0  # the next chunk to seal; each index is sealed once, in order
        self._pushed = 0
        self._partial = bytearray()  # the start of a chunk whose end has not arrived yet
        self._out = bytearray()

    @property
    def header(self) -> bytes:
        return self._header.raw

    @property
    def size(self) -> int:
        """The encrypted file's size: header and every chunk with its tag."""
        return len(self._header.raw) + self._header.ciphertext_size

    def update(self, data: bytes | bytearray | memoryview) -> memoryview:
        """Push the next plaintext bytes; return the ciphertext of the chunks they complete."""
        view = memoryview(data).cast("B")
        if self._pushed + len(view) > self._header.length:
            raise ValueError(f"the model holds more than the announced {self._header.length} bytes")
        self._pushed += len(view)
        most = (len(self._partial) + len(view)) // self._header.chunk_size + 1
        need = len(self._partial) + len(view) + most * TAG_SIZE
        if len(self._out) < need:
            # A new buffer, not a resize: a view the caller still holds keeps the old one alive.
            self._out = bytearray(need)
        out = memoryview(self._out)
        done = 0
        if self._partial:
            take = self._header.plaintext_size(self._index) - len(self._partial)
            self._partial += view[:take]
            view = view[take:]
            if len(self._partial) < self._header.plaintext_size(self._index):
                return out[:0]
            done = self._seal(self._partial, out, done)
            self._partial = bytearray()
        while self._index < self._header.chunks:
            size = self._header.plaintext_size(self._index)
            if len(view) < size:
                break
            done = self._seal(view[:size], out, done)
            view = view[size:]
        self._partial += view
        return out[:done]

    def finish(self) -> memoryview:
        """The chunks still due (only an empty model has one left); every byte must be in."""
        if self._pushed != self._header.length:
            raise ValueError(
                f"the model ended after {self._pushed} of the announced {self._header.length} bytes"
            )
        if self._index < self._header.chunks:
            return self.update(b"")
        return memoryview(self._out)[:0]

    def _seal(self, plaintext: bytes | bytearray | memoryview, out: memoryview, at: int) -> int:
        end = at + len(plaintext) + TAG_SIZE
        ad = self._context + _INDEX.pack(self._index)
        self._aesgcm.encrypt_into(self._header.nonce(self._index), plaintext, ad, out[at:end])
        self._index += 1
        return end
