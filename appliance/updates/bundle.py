"""The bundle file: one POSIX tar, plain or gzip'ed, read in one pass and never extracted.

Layout (``<name>-<version>.aplbundle``), in this order::

    metadata/1.root.json ... metadata/<N>.root.json   the vendor's root chain, every version
    metadata/timestamp.json, snapshot.json, targets.json
    targets/<name>/<version>/manifest.json, model.xml, model.bin, reference/...

The reader trusts nothing in the tar headers: every member must be a regular file with a plain
name, appear once, and is read only up to a limit set by the caller (a fixed cap for metadata, the
signed length for targets). A byte budget counts both the file's bytes and the decompressed bytes;
it is small until the metadata is verified and then grows by the signed lengths, so gzip bombs,
endless members and huge pax headers are refused after reading little more than the budget.

tarfile parses the headers only. It runs in its random-access mode on a reader that can only
move forward, so it can never seek back; member data is read past it, with large ``readinto``
calls straight into a few reused buffers, and tarfile's forward seek to the next header then only
skips the padding. (Its stream mode copied every byte through 10 KiB reads, joins and slices: half
the time of a whole install.) While a helper thread hashes one buffer, this thread hands the same
buffer to the sink and reads the next: hashlib, AES-GCM and file I/O release the GIL, so the
reading, hashing and encrypting share the cores.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import tarfile
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Protocol, cast

from appliance.updates.errors import (
    DO_NOT_INSTALL,
    BundleFormatError,
    BundleSizeError,
    UnsafeMemberError,
)
from appliance.updates.manifest import PATH_COMPONENT

BUNDLE_SUFFIX = ".aplbundle"
METADATA_DIR, TARGETS_DIR = "metadata", "targets"
MAX_METADATA_BYTES = 1 << 20  # one metadata file
METADATA_BUDGET = 16 << 20  # every metadata member with its tar headers
MEMBER_OVERHEAD = 8 << 10  # a tar header, a pax header for a long name, the padding
SLACK = 64 << 10  # the end-of-archive blocks, tar record padding and read-ahead
# Member data moves in BUFFERS buffers of CHUNK bytes: a multiple of the model store's 1 MiB AEAD
# chunks (so the sink seals them without copying) and at least 1 MiB (verify takes the manifest
# from copy_member's return); hashing may lag BUFFERS - 1 of them behind.
CHUNK = 2 << 20
BUFFERS = 4
_GZIP_MAGIC = b"\x1f\x8b"
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)
ROLE_FILES = ("timestamp.json", "snapshot.json", "targets.json")
_ROOT_FILE = re.compile(r"([1-9]\d{0,5})\.root\.json")
_MIN_PARTS = 2  # "metadata/x" or "targets/x/..."


def bundle_file_name(name: str, version: str) -> str:
    return f"{name}-{version}{BUNDLE_SUFFIX}"


Buffer = bytes | bytearray | memoryview


class Writer(Protocol):
    """One target's bytes, in order. ``write`` must be done with its buffer when it returns."""

    def write(self, data: Buffer, /) -> int: ...

    def close(self) -> None: ...


class Hasher(Protocol):
    def update(self, data: Buffer, /) -> None: ...


class TargetSink(Protocol):
    """Where the verifier puts target bytes while it hashes them.

    ``open`` gets the target path and its signed length; ``close`` is called also when reading
    stopped early, so it must not raise for a short file. The bytes are unverified until
    ``verify_bundle`` returns: a sink must stage them and its owner must discard them when
    verification raises.
    """

    def open(self, path: str, length: int) -> Writer: ...


class _MemoryFile(io.BytesIO):
    def __init__(self, files: dict[str, bytes], path: str) -> None:
        super().__init__()
        self._files, self._path = files, path

    def close(self) -> None:
        if not self.closed:
            self._files[self._path] = self.getvalue()
        super().close()


class MemorySink:
    """Keeps every target in memory, by target path (for small models and tests)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def open(self, path: str, length: int) -> Writer:
        return _MemoryFile(self.files, path)


class NullSink:
    """Discards target bytes (the vendor's self-check only needs the hashes)."""

    class _Null:
        def write(self, data: Buffer, /) -> int:
            return len(data)

        def close(self) -> None:
            pass

    def open(self, path: str, length: int) -> Writer:
        return self._Null()


@dataclass(frozen=True)
class Member:
    """A bundle member whose type and name were checked; ``size`` is what the header claims."""

    name: str
    size: int


class _Budget:
    """Bytes the reader may still take, from the file (``raw``) and after decompression."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = {"raw": 0, "plain": 0}

    def allowed(self, kind: str) -> int:
        # Deflate stores incompressible data with a little overhead: allow it on the file side.
        return self.limit + (self.limit // 64 + SLACK if kind == "raw" else 0)

    def spend(self, kind: str, n: int) -> None:
        self.used[kind] += n
        if self.used[kind] > self.allowed(kind):
            what = "the bundle file holds" if kind == "raw" else "the bundle decompresses to"
            raise BundleSizeError(
                f"{what} more than {self.allowed(kind)} bytes, more than its signed metadata "
                "allows (an oversized or endless member, or a decompression bomb).",
                DO_NOT_INSTALL,
            )


class _Counted:
    """A reader that never asks ``inner`` for more than the budget still allows.

    It also counts its position and seeks forwards by reading, so tarfile's random-access mode
    can use it without ever going back: ``seek`` to an earlier place raises.
    """

    def __init__(self, inner: BinaryIO | gzip.GzipFile, budget: _Budget, kind: str) -> None:
        self._inner, self._budget, self._kind = inner, budget, kind
        self._readinto = getattr(inner, "readinto", None)
        self.pos = 0

    def room(self) -> int:
        """One byte more than the budget allows: reading that much is refused."""
        return self._budget.allowed(self._kind) - self._budget.used[self._kind] + 1

    def readinto(self, view: memoryview) -> int:
        """Fill ``view`` as far as the data goes; fewer bytes only at the end of the data."""
        filled = 0
        while filled < len(view):
            part = view[filled : filled + min(self.room(), len(view) - filled)]
            if self._readinto is not None:
                got = self._readinto(part) or 0
            else:  # a reader without readinto (the BinaryIO protocol does not promise it)
                data = self._inner.read(len(part))
                got = len(data)
                part[:got] = data
            self._budget.spend(self._kind, got)
            self.pos += got
            if not got:
                break
            filled += got
        return filled

    def read(self, n: int = -1) -> bytes:
        # Never allocate what the budget refuses: a header may claim any size (exabytes).
        buf = bytearray(min(self.room(), n if n is not None and n >= 0 else self.room()))
        return bytes(buf[: self.readinto(memoryview(buf))])

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        if whence != io.SEEK_SET or offset < self.pos:
            raise io.UnsupportedOperation("a bundle is read in one pass, forwards")
        while self.pos < offset and self.read(min(CHUNK, offset - self.pos)):
            pass  # skipped bytes count against the budget; a short end shows in the next read
        return self.pos


class BundleReader:
    """One pass over a bundle's members: checks each header, reads data only up to a limit."""

    def __init__(self, fileobj: BinaryIO, name: str) -> None:
        self.name = name
        self._budget = _Budget(METADATA_BUDGET)
        self._seen: set[str] = set()
        self._current: tarfile.TarInfo | None = None
        self._left = 0  # data bytes of the current member not read yet
        self._buffers: list[bytearray] = []
        self._helper: ThreadPoolExecutor | None = None
        raw = _Counted(fileobj, self._budget, "raw")
        self._data = raw
        if _peek(fileobj) == _GZIP_MAGIC:
            self._data = _Counted(gzip.GzipFile(fileobj=raw, mode="rb"), self._budget, "plain")
        with self._errors("the start"):
            # tarfile only calls read, tell and forward seeks; the cast is for its annotation.
            stream = cast("IO[bytes]", self._data)
            self._tar = tarfile.open(fileobj=stream, mode="r:")  # noqa: SIM115 - no close

    def allow(self, data_bytes: int, members: int) -> None:
        """Grow the budget by ``data_bytes`` of member data in ``members`` more members."""
        self._budget.limit += data_bytes + members * MEMBER_OVERHEAD + SLACK

    def next_member(self) -> Member | None:
        """The next member, or None at the end; UnsafeMemberError for anything but a plain file."""
        with self._errors("the next member"):
            info = self._tar.next()
        if info is None:
            return None
        _check_member(info)
        if info.name in self._seen:
            raise BundleFormatError(
                f"bundle member '{shown(info.name)}' appears twice.", DO_NOT_INSTALL
            )
        if info.offset_data != self._data.pos:  # tarfile read exactly the header: a bug guard
            raise ValueError(f"{info.name}: data at {info.offset_data}, reader at {self._data.pos}")
        self._seen.add(info.name)
        self._current, self._left = info, info.size
        return Member(info.name, info.size)

    def chunks(self, member: Member, length: int) -> Iterator[memoryview]:
        """Yield exactly ``length`` bytes of ``member`` (the caller checked its header size).

        The views take turns in ``BUFFERS`` reused buffers: a view stays valid until the
        ``BUFFERS``-th ``next`` after it, which fills its buffer again.
        """
        self._check_current(member, length)
        if not self._buffers:
            self._buffers = [bytearray(CHUNK) for _ in range(BUFFERS)]
        for turn in range(-(-length // CHUNK)):
            size = min(CHUNK, self._left)
            view = memoryview(self._buffers[turn % BUFFERS])[:size]
            self._fill(view, member)
            yield view

    def read(self, member: Member, length: int) -> bytes:
        """All ``length`` bytes of ``member`` (metadata and other small files)."""
        self._check_current(member, length)
        buf = bytearray(length)
        self._fill(memoryview(buf), member)
        return bytes(buf)

    def helper(self) -> ThreadPoolExecutor:
        """The thread that hashes one buffer while this one writes it and reads the next."""
        if self._helper is None:
            self._helper = ThreadPoolExecutor(1, thread_name_prefix="bundle-hash")
        return self._helper

    def close(self) -> None:
        if self._helper is not None:
            self._helper.shutdown()

    def _check_current(self, member: Member, length: int) -> None:
        current = self._current
        if (
            current is None
            or member.name != current.name
            or not length == member.size == current.size
        ):
            raise ValueError(f"{member.name} is not the current member or not {length} bytes")
        if self._left != current.size:
            raise ValueError(f"{member.name} was read already")

    def _fill(self, view: memoryview, member: Member) -> None:
        with self._errors(member.name):
            got = self._data.readinto(view)
            self._left -= got
            if got < len(view):
                raise tarfile.ReadError("unexpected end of data")

    @contextlib.contextmanager
    def _errors(self, where: str) -> Iterator[None]:
        try:
            yield
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise BundleFormatError(
                f"{self.name} is truncated or not a bundle (reading {where}): {exc}.",
                "Copy the bundle again from the vendor's medium; bundles are tar files written "
                "by appliance-vendor.",
            ) from exc
        except OSError as exc:
            raise BundleFormatError(
                f"cannot read {self.name} (at {where}): {exc.strerror or exc}.",
                "Check the USB medium (reseat it, try another port) and copy the bundle again.",
            ) from exc


@dataclass(frozen=True)
class RawMetadata:
    """The metadata a bundle carries, unverified: the root chain by version and the top roles."""

    roots: Mapping[int, bytes]
    timestamp: bytes
    snapshot: bytes
    targets: bytes


@contextlib.contextmanager
def open_bundle(source: str | os.PathLike[str] | BinaryIO) -> Iterator[BundleReader]:
    """Open a bundle file (or a binary reader positioned at its start) for one pass."""
    if isinstance(source, str | os.PathLike):
        source = Path(source)
        try:
            fh = source.open("rb")
        except OSError as exc:
            raise BundleFormatError(
                f"cannot open the bundle {source}: {exc.strerror}.",
                "Check the path and the medium.",
            ) from exc
        with fh, contextlib.closing(BundleReader(fh, str(source))) as reader:
            yield reader
    else:
        name = str(getattr(source, "name", None) or "the bundle")
        with contextlib.closing(BundleReader(source, name)) as reader:
            yield reader


def read_metadata(reader: BundleReader) -> tuple[RawMetadata, Member | None]:
    """Read the leading metadata members; return them and the first member after them."""
    roots: dict[int, bytes] = {}
    roles: dict[str, bytes] = {}
    member = reader.next_member()
    while member is not None and member.name.startswith(f"{METADATA_DIR}/"):
        name = member.name.removeprefix(f"{METADATA_DIR}/")
        root = _ROOT_FILE.fullmatch(name)
        if not root and name not in ROLE_FILES:
            raise BundleFormatError(
                f"unexpected bundle member '{shown(member.name)}'.", DO_NOT_INSTALL
            )
        if member.size > MAX_METADATA_BYTES:
            raise BundleSizeError(
                f"bundle member '{shown(member.name)}' claims {member.size} bytes; metadata "
                f"files may have at most {MAX_METADATA_BYTES}.",
                DO_NOT_INSTALL,
            )
        data = reader.read(member, member.size)
        if root:
            roots[int(root.group(1))] = data
        else:
            roles[name] = data
        member = reader.next_member()
    missing = [f for f in ROLE_FILES if f not in roles]
    chain = [v for v in range(1, max(roots, default=0) + 1) if v not in roots]
    if missing or not roots or chain:
        absent = missing + [f"{v}.root.json" for v in chain] + ([] if roots else ["1.root.json"])
        raise BundleFormatError(
            f"the bundle's metadata lacks {', '.join(absent)} (metadata must come first).",
            DO_NOT_INSTALL,
        )
    raw = RawMetadata(roots, roles["timestamp.json"], roles["snapshot.json"], roles["targets.json"])
    return raw, member


def copy_member(
    reader: BundleReader,
    member: Member,
    hashers: Sequence[Hasher],
    out: Writer,
    progress: Callable[[int], None] = lambda _n: None,
) -> bytes | None:
    """Pass all of ``member`` to ``out`` and every hasher, reading each byte once.

    The helper thread hashes the buffers in order while this thread hands each to ``out`` and
    reads the next; a buffer is refilled only once its hash is done, and the hashing may fall
    up to ``BUFFERS - 1`` buffers behind, so neither side waits for the other's hiccups.
    ``progress`` gets the size of each buffer written. A member of at most one buffer is read
    whole, hashed and written here (nothing to overlap) and its bytes returned.
    """
    if member.size <= CHUNK:
        data = reader.read(member, member.size)
        _update(hashers, data)
        out.write(data)
        progress(len(data))
        return data
    helper = reader.helper()
    hashing: deque[Future[None]] = deque()
    try:
        for view in reader.chunks(member, member.size):
            hashing.append(helper.submit(_update, hashers, view))
            out.write(view)
            progress(len(view))
            while len(hashing) >= BUFFERS:  # the next read refills the oldest one's buffer
                hashing.popleft().result()
    finally:
        for job in hashing:  # also on errors: the helper must be done with the buffers
            job.result()
    return None


def _update(hashers: Sequence[Hasher], data: Buffer) -> None:
    for hasher in hashers:
        hasher.update(data)


def write_bundle(
    out: BinaryIO,
    metadata: Sequence[tuple[str, bytes]],
    targets: Sequence[tuple[str, Path]],
    *,
    mtime: int,
    compress: bool = False,
) -> None:
    """Write a bundle (vendor side): metadata files by name, then target files by target path."""
    with contextlib.ExitStack() as stack:
        sink: BinaryIO = out
        if compress:
            sink = stack.enter_context(gzip.GzipFile(fileobj=out, mode="wb", mtime=mtime))  # type: ignore[assignment]
        tar = stack.enter_context(tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT))
        for name, data in metadata:
            tar.addfile(_info(f"{METADATA_DIR}/{name}", len(data), mtime), io.BytesIO(data))
        for path, local in targets:
            with local.open("rb") as fh:
                size = local.stat().st_size
                tar.addfile(_info(f"{TARGETS_DIR}/{path}", size, mtime), fh)


def _info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, mtime, 0o644, tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _peek(fh: BinaryIO) -> bytes:
    """The first two bytes of ``fh``, which must stay readable from its start afterwards."""
    peek = getattr(fh, "peek", None)
    if peek is not None:
        return bytes(peek(2)[:2])
    if fh.seekable():
        start = fh.tell()
        head = fh.read(2)
        fh.seek(start)
        return head
    return b""


def shown(text: str, limit: int = 200) -> str:
    """A name from a bundle as a refusal may quote it: control characters (a terminal escape
    meant for the console that shows the reason) and non-ASCII escaped, and cut to ``limit``."""
    safe = ascii(text)[1:-1]
    return safe if len(safe) <= limit else f"{safe[:limit]}..."


def _check_member(info: tarfile.TarInfo) -> None:
    """Refuse a member that is not a regular file with a plain relative name."""
    name, problem = info.name, ""
    parts = name.split("/")
    if name.startswith("/"):
        problem = "has an absolute path"
    elif ".." in parts:
        problem = "climbs out of the bundle with '..' (path traversal)"
    elif info.issym():
        problem = f"is a symbolic link (to '{shown(info.linkname)}')"
    elif info.islnk():
        problem = f"is a hard link (to '{shown(info.linkname)}')"
    elif info.ischr() or info.isblk():
        problem = "is a device file"
    elif info.isfifo():
        problem = "is a FIFO"
    elif info.isdir():
        problem = "is a folder"
    elif info.type not in _REGULAR or info.sparse is not None:
        problem = f"is not a regular file (tar type {info.type!r})"
    elif (
        len(parts) < _MIN_PARTS
        or parts[0] not in (METADATA_DIR, TARGETS_DIR)
        or not all(PATH_COMPONENT.fullmatch(p) for p in parts[1:])
    ):
        problem = "has a name outside metadata/ and targets/ or with unusual characters"
    if problem:
        raise UnsafeMemberError(
            f"bundle member '{shown(name)}' {problem}; bundles hold only regular files under "
            "metadata/ and targets/.",
            DO_NOT_INSTALL,
        )
