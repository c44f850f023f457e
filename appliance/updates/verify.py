"""Verify an update bundle: TUF metadata, the anti-rollback floor, target bytes, compatibility.

The decisions are pure functions of their inputs (the bundle's bytes, the box's trusted metadata,
the floor read from the TPM counter, the box profile): no clock, no TPM, no network. Metadata goes
through python-tuf's ``TrustedMetadataSet`` in the order of the TUF client workflow (root chain,
timestamp, snapshot, targets); the offline freshness rules of ADR 0004 are added around it:

* the bundle number (timestamp = snapshot = targets version) must be above ``floor``;
* expiry is judged against the newest signed not-before the box has accepted (this bundle's or
  the last one's), never against the box's clock.

``verify_bundle`` writes nothing: the caller persists ``VerifiedBundle.trusted`` and advances the
counter to ``VerifiedBundle.version`` only after the model is installed and validated.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from tuf.api import exceptions

# The payload classes are tuf.api.metadata's public API; importing them from where they are defined
# keeps mypy --strict (no implicit re-export) quiet without a per-package override.
from tuf.api._payload import Root, T, TargetFile, Targets, Timestamp
from tuf.api.metadata import Metadata
from tuf.ngclient._internal.trusted_metadata_set import TrustedMetadataSet
from tuf.ngclient.config import EnvelopeType

from appliance.fsutil import atomic_write
from appliance.updates.bundle import (
    TARGETS_DIR,
    BundleReader,
    Member,
    MemorySink,
    RawMetadata,
    TargetSink,
    copy_member,
    open_bundle,
    read_metadata,
)
from appliance.updates.errors import (
    DO_NOT_INSTALL,
    BundleFormatError,
    ManifestError,
    MetadataError,
    MetadataExpiredError,
    RollbackError,
    SignatureError,
    TargetIntegrityError,
    TrustedStateError,
)
from appliance.updates.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    BoxProfile,
    Manifest,
    check_compatibility,
    check_relative_path,
    parse_manifest,
)

NOT_BEFORE_FIELD = "x-appliance-not-before"  # in targets metadata, signed by the targets keys
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # as TUF writes "expires"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HASHES = frozenset({"sha256", "sha384", "sha512"})
Progress = Callable[[int, int], None]  # bytes done, bytes in all
_NEWER = "Use the newest bundle from the vendor: a bundle installs once, and never an older one."


@dataclass(frozen=True)
class TrustedState:
    """The box's trusted metadata: the vendor root it trusts and the last accepted bundle's roles.

    Raw bytes, exactly as verified; the root is re-verified against itself on every use.
    """

    root: bytes
    timestamp: bytes | None = None
    snapshot: bytes | None = None
    targets: bytes | None = None

    @classmethod
    def from_root(cls, data: bytes) -> TrustedState:
        """The state of a box that trusts the vendor root ``data`` (provisioning); checks it."""
        _trusted_set(cls(data))
        return cls(data)

    def reference_time(self) -> datetime:
        """The newest signed not-before accepted so far (the epoch before the first bundle)."""
        if self.targets is None:
            return EPOCH
        try:
            return not_before(Metadata[Targets].from_bytes(self.targets).signed)
        except (exceptions.RepositoryError, MetadataError) as exc:
            raise TrustedStateError(
                f"the box's trusted targets.json is unreadable: {exc}.",
                "Restore the trusted metadata folder from the box's backup, or re-import the "
                "vendor root while provisioning.",
            ) from exc


@dataclass(frozen=True)
class AcceptedMetadata:
    version: int  # the bundle number: timestamp, snapshot and targets version
    root_version: int
    not_before: datetime
    targets: Mapping[str, TargetFile]
    trusted: TrustedState  # what the box trusts once this bundle is committed


@dataclass(frozen=True)
class VerifiedTarget:
    path: str  # "<name>/<version>/model.bin", as in the targets metadata
    length: int
    sha256: str


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle that passed every check. ``files`` holds target bytes when no sink was given."""

    manifest: Manifest
    version: int  # advance the anti-rollback counter to this after commit
    root_version: int
    not_before: datetime
    trusted: TrustedState  # persist with save_trusted_state after commit
    targets: tuple[VerifiedTarget, ...]
    files: Mapping[str, bytes] = field(default_factory=dict)

    def file(self, name: str) -> bytes:
        """The bytes of one model file by its name in the model folder, e.g. "model.bin"."""
        return self.files[f"{self.manifest.prefix}/{name}"]


def load_trusted_state(folder: Path) -> TrustedState:
    """Read the trusted metadata folder: root.json and, after the first bundle, the other roles."""
    parts: dict[str, bytes | None] = {}
    for role in ("root", "timestamp", "snapshot", "targets"):
        path = folder / f"{role}.json"
        try:
            parts[role] = path.read_bytes() if path.exists() else None
        except OSError as exc:
            raise TrustedStateError(
                f"cannot read {path}: {exc.strerror}.", "Check the box's data partition."
            ) from exc
    root = parts.pop("root")
    if root is None:
        raise TrustedStateError(
            f"{folder} holds no trusted vendor root (root.json).",
            "Import the vendor's root metadata while provisioning the box.",
        )
    return TrustedState(root, parts["timestamp"], parts["snapshot"], parts["targets"])


def save_trusted_state(folder: Path, state: TrustedState) -> None:
    """Write ``state`` into ``folder``, each file atomically; the timestamp goes last."""
    for role in ("root", "targets", "snapshot", "timestamp"):
        data: bytes | None = getattr(state, role)
        path = folder / f"{role}.json"
        if data is not None:
            atomic_write(path, data, mode=0o644)
        else:
            path.unlink(missing_ok=True)


def not_before(targets: Targets) -> datetime:
    """The signed not-before of a targets role; MetadataError when it is missing or malformed."""
    value = targets.unrecognized_fields.get(NOT_BEFORE_FIELD)
    try:
        return datetime.strptime(str(value), TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise MetadataError(
            f"targets v{targets.version} has no valid '{NOT_BEFORE_FIELD}' ({value!r}).",
            "Bundles must be built by appliance-vendor, which signs the not-before.",
        ) from None


def verify_bundle(
    source: str | os.PathLike[str] | BinaryIO,
    trusted: TrustedState,
    floor: int,
    box: BoxProfile,
    *,
    sink: TargetSink | None = None,
    progress: Progress = lambda _done, _total: None,
) -> VerifiedBundle:
    """Verify the bundle at ``source`` completely, reading it once and never extracting it.

    Target bytes go to ``sink`` while they are hashed (unverified until this returns); without a
    sink they are kept in memory in ``VerifiedBundle.files``. ``progress`` gets the target bytes
    read so far and their signed total. Raises an UpdateError subclass
    naming the problem: BundleFormatError (and UnsafeMemberError, BundleSizeError),
    SignatureError, RollbackError, MetadataError (and MetadataExpiredError), TargetIntegrityError,
    ManifestError, IncompatibleBundleError, TrustedStateError.
    """
    memory = MemorySink()  # stays empty when the caller brings a sink
    with open_bundle(source) as reader:
        raw, first = read_metadata(reader)
        accepted = verify_metadata(raw, trusted, floor)
        manifest, targets = _read_targets(reader, first, accepted, box, sink or memory, progress)
    return VerifiedBundle(
        manifest=manifest,
        version=accepted.version,
        root_version=accepted.root_version,
        not_before=accepted.not_before,
        trusted=accepted.trusted,
        targets=targets,
        files=memory.files,
    )


def verify_metadata(raw: RawMetadata, trusted: TrustedState, floor: int) -> AcceptedMetadata:
    """The TUF client workflow on a bundle's metadata, plus the floor and offline expiry rules."""
    tset = _trusted_set(trusted)
    tset.reference_time = trusted.reference_time()  # replaces the clock read of its constructor
    new_root = _update_roots(tset, raw.roots)
    if trusted.timestamp is not None:  # for TUF's own rollback checks; unusable after rotation
        with contextlib.suppress(exceptions.RepositoryError):
            tset.update_timestamp(trusted.timestamp)
    timestamp = _verified(tset.root, Timestamp, "timestamp", raw.timestamp)
    if timestamp.version <= floor:
        replay = " (a replay of the installed bundle)" if timestamp.version == floor else ""
        raise RollbackError(
            f"bundle version {timestamp.version} is not above the anti-rollback floor {floor} "
            f"held in the TPM counter{replay}.",
            _NEWER,
        )
    with _tuf_errors("timestamp", raw.timestamp, tset.root, tset.reference_time):
        tset.update_timestamp(raw.timestamp)
    if trusted.snapshot is not None:
        with contextlib.suppress(exceptions.RepositoryError):
            tset.update_snapshot(trusted.snapshot, trusted=True)
    with _tuf_errors("snapshot", raw.snapshot, tset.root, tset.reference_time):
        snapshot = tset.update_snapshot(raw.snapshot)
    with _tuf_errors("targets", raw.targets, tset.root, tset.reference_time):
        targets = tset.update_targets(raw.targets)
    if not timestamp.version == snapshot.version == targets.version:
        raise MetadataError(
            f"bundle metadata versions differ: timestamp v{timestamp.version}, snapshot "
            f"v{snapshot.version}, targets v{targets.version}; appliance-vendor signs them equal.",
            DO_NOT_INSTALL,
        )
    signed_not_before = not_before(targets)
    _check_expiry(tset, max(tset.reference_time, signed_not_before))
    _check_layout(targets)
    root = new_root if new_root is not None else trusted.root
    return AcceptedMetadata(
        version=targets.version,
        root_version=tset.root.version,
        not_before=signed_not_before,
        targets=dict(targets.targets),
        trusted=TrustedState(root, raw.timestamp, raw.snapshot, raw.targets),
    )


def _trusted_set(trusted: TrustedState) -> TrustedMetadataSet:
    try:
        return TrustedMetadataSet(trusted.root, EnvelopeType.METADATA)
    except exceptions.RepositoryError as exc:
        raise TrustedStateError(
            f"the box's trusted vendor root is not a valid self-signed TUF root: {exc}.",
            "Re-import the vendor root metadata (provisioning) from the vendor's medium.",
        ) from exc


def _update_roots(tset: TrustedMetadataSet, roots: Mapping[int, bytes]) -> bytes | None:
    """Walk the bundle's root chain from the trusted version on; return the newest root's bytes."""
    newest = None
    while (version := tset.root.version + 1) in roots:
        data, previous = roots[version], tset.root
        new = _parse(Root, f"{version}.root.json", data)
        if new.signed.version != version:
            raise MetadataError(
                f"metadata/{version}.root.json holds root version {new.signed.version}.",
                DO_NOT_INSTALL,
            )
        try:
            tset.update_root(data)
        except exceptions.UnsignedMetadataError as exc:
            result = new.signed.get_root_verification_result(
                previous, new.signed_bytes, new.signatures
            )
            raise SignatureError(
                f"root v{version} is signed by {len(result.first.signed)} of the "
                f"{result.first.threshold} root keys that root v{previous.version} requires and "
                f"by {len(result.second.signed)} of the {result.second.threshold} it names itself; "
                "a new root needs the thresholds of both.",
                DO_NOT_INSTALL,
            ) from exc
        except exceptions.RepositoryError as exc:
            raise MetadataError(
                f"root v{version} is not acceptable: {exc}.", DO_NOT_INSTALL
            ) from exc
        newest = data
    return newest


def _parse(kind: type[T], name: str, data: bytes) -> Metadata[T]:
    try:
        md = Metadata[T].from_bytes(data)
    except exceptions.RepositoryError as exc:
        raise MetadataError(
            f"{name} in the bundle is not TUF metadata: {exc}.", DO_NOT_INSTALL
        ) from exc
    if md.signed.type != kind.type:
        raise MetadataError(f"{name} holds {md.signed.type} metadata.", DO_NOT_INSTALL)
    return md


def _verified(root: Root, kind: type[T], role: str, data: bytes) -> T:
    """``data`` parsed and checked against ``root``'s threshold for ``role``."""
    md = _parse(kind, f"{role}.json", data)
    with _tuf_errors(role, data, root):
        root.verify_delegate(role, md.signed_bytes, md.signatures)
    return md.signed


def _signature_problem(role: str, data: bytes, root: Root) -> str:
    md = Metadata.from_bytes(data)
    result = root.get_verification_result(role, md.signed_bytes, md.signatures)
    trusted = set(root.roles[role].keyids)
    text = (
        f"{role} v{md.signed.version} carries valid signatures from {len(result.signed)} of the "
        f"{result.threshold} {role} keys that root v{root.version} requires"
    )
    if not md.signatures:
        text = f"{role} v{md.signed.version} is unsigned (root v{root.version} requires "
        text += f"{result.threshold} {role} signatures)"
    foreign = sorted(k[:16] for k in md.signatures if k not in trusted)
    invalid = sorted(k[:16] for k in md.signatures if k in trusted and k not in result.signed)
    if foreign:
        text += f"; keys not trusted for {role} (unknown or revoked): {', '.join(foreign)}"
    if invalid:
        text += f"; invalid signatures by {', '.join(invalid)}"
    return text + "."


@contextlib.contextmanager
def _tuf_errors(role: str, data: bytes, root: Root, reference: datetime = EPOCH) -> Iterator[None]:
    """Translate python-tuf's refusals for ``role`` into the appliance's errors, once."""
    try:
        yield
    except exceptions.UnsignedMetadataError as exc:
        raise SignatureError(_signature_problem(role, data, root), DO_NOT_INSTALL) from exc
    except exceptions.BadVersionNumberError as exc:
        raise RollbackError(
            f"{role} goes back behind the box's trusted metadata: {str(exc) or 'same version'}.",
            _NEWER,
        ) from exc
    except exceptions.ExpiredMetadataError as exc:
        raise MetadataExpiredError(
            f"{exc}: it expired before {reference:{TIME_FORMAT}}, the newest signed not-before "
            "this box has accepted (the box's clock is not used).",
            "Ask the vendor for a bundle built with current metadata.",
        ) from exc
    except exceptions.LengthOrHashMismatchError as exc:
        raise MetadataError(
            f"{role}.json does not match the length and hashes signed for it ({exc}): the "
            "bundle mixes metadata from different bundles.",
            DO_NOT_INSTALL,
        ) from exc
    except exceptions.RepositoryError as exc:
        raise MetadataError(f"{role}.json is not acceptable: {exc}.", DO_NOT_INSTALL) from exc


def _check_expiry(tset: TrustedMetadataSet, reference: datetime) -> None:
    """Refuse any role that expired before ``reference`` (ADR 0004: no clock, signed time)."""
    for signed in (tset.root, tset.timestamp, tset.snapshot, tset.targets):
        if signed.is_expired(reference):
            raise MetadataExpiredError(
                f"{signed.type} v{signed.version} expired on {signed.expires:{TIME_FORMAT}}, "
                f"before {reference:{TIME_FORMAT}}, the newest signed not-before this box knows.",
                "Ask the vendor for a bundle built with current metadata (the vendor re-signs "
                "an expired root with `appliance-vendor root rotate`).",
            )


def _check_layout(targets: Targets) -> None:
    """All targets under one ``<name>/<version>/`` folder that holds a manifest.json."""
    paths = list(targets.targets)
    try:
        for path in paths:
            check_relative_path(path, "target")
    except ManifestError as exc:
        raise MetadataError(exc.message, DO_NOT_INSTALL) from exc
    prefixes = {"/".join(p.split("/")[:2]) for p in paths}
    folder = next(iter(prefixes), "")  # every target inside it: slot files are named from that
    inside = len(prefixes) == 1 and all(p.startswith(f"{folder}/") for p in paths)
    if not inside or f"{folder}/{MANIFEST_NAME}" not in paths:
        raise MetadataError(
            f"the signed targets are not one model folder <name>/<version>/ with a "
            f"{MANIFEST_NAME}: {', '.join(sorted(paths)[:5])}.",
            DO_NOT_INSTALL,
        )
    for path, target in targets.targets.items():
        if "sha256" not in target.hashes or not set(target.hashes) <= HASHES:
            raise MetadataError(
                f"target {path} lacks a sha256 or has unknown hashes.", DO_NOT_INSTALL
            )


def _read_targets(
    reader: BundleReader,
    member: Member | None,
    accepted: AcceptedMetadata,
    box: BoxProfile,
    sink: TargetSink,
    progress: Progress,
) -> tuple[Manifest, tuple[VerifiedTarget, ...]]:
    """Read each signed target once, in any order; check the manifest as soon as it is read."""
    expected = {f"{TARGETS_DIR}/{p}": t for p, t in accepted.targets.items()}
    total, moved, shown = sum(t.length for t in expected.values()), 0, 0
    reader.allow(total, len(expected))

    def advance(n: int) -> None:  # reports each percent, not each buffer
        nonlocal moved, shown
        moved += n
        if (moved - shown) * 100 >= total or moved == total:
            shown = moved
            progress(moved, total)

    folder = "/".join(next(iter(accepted.targets)).split("/")[:2])  # one folder: _check_layout
    manifest_path = f"{folder}/{MANIFEST_NAME}"
    manifest: Manifest | None = None
    done = []
    while member is not None:
        target = expected.pop(member.name, None)
        if target is None:
            raise BundleFormatError(
                f"bundle member '{member.name}' is not one of the signed targets (or comes "
                "twice, or is metadata after the targets).",
                DO_NOT_INSTALL,
            )
        keep = target.path == manifest_path
        data = _read_target(reader, member, target, sink, advance, keep=keep)
        if data is not None:
            manifest = _check_manifest(data, manifest_path, accepted, box)
        done.append(VerifiedTarget(target.path, target.length, target.hashes["sha256"]))
        member = reader.next_member()
    if expected or manifest is None:
        raise BundleFormatError(
            f"the bundle lacks {', '.join(sorted(expected))}: it is truncated or incomplete.",
            DO_NOT_INSTALL,
        )
    return manifest, tuple(done)


def _read_target(
    reader: BundleReader,
    member: Member,
    target: TargetFile,
    sink: TargetSink,
    progress: Callable[[int], None],
    *,
    keep: bool,
) -> bytes | None:
    """Stream one target into ``sink``, hashing it; return its bytes when ``keep``."""
    if member.size != target.length:
        kind = "oversized" if member.size > target.length else "truncated"
        raise TargetIntegrityError(
            f"bundle member '{member.name}' holds {member.size} bytes but its signed length is "
            f"{target.length} ({kind}).",
            DO_NOT_INSTALL,
        )
    if keep and target.length > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{member.name} is over 1 MiB.", DO_NOT_INSTALL)
    hashers = {alg: hashlib.new(alg) for alg in target.hashes}
    with contextlib.closing(sink.open(target.path, target.length)) as out:
        data = copy_member(reader, member, list(hashers.values()), out, progress)
    for alg, hasher in hashers.items():
        if hasher.hexdigest() != target.hashes[alg]:
            raise TargetIntegrityError(
                f"bundle member '{member.name}' has {alg} {hasher.hexdigest()[:16]}..., but the "
                f"signed targets metadata says {target.hashes[alg][:16]}... (hash mismatch).",
                DO_NOT_INSTALL,
            )
    return data if keep else None  # a kept manifest is under 1 MiB: read whole, never None


def _check_manifest(
    data: bytes, path: str, accepted: AcceptedMetadata, box: BoxProfile
) -> Manifest:
    """Parse the signed manifest; it must describe exactly the signed targets; check the box."""
    manifest = parse_manifest(data)
    listed = {f"{manifest.prefix}/{name}" for name in manifest.files()}
    if path != f"{manifest.prefix}/{MANIFEST_NAME}" or listed != set(accepted.targets):
        raise ManifestError(
            f"the manifest of {manifest.name} {manifest.version} does not match the signed "
            f"targets: it names {len(listed)} files under {manifest.prefix}/, the metadata "
            f"signs {len(accepted.targets)} ({', '.join(sorted(set(accepted.targets) ^ listed))}).",
            DO_NOT_INSTALL,
        )
    check_compatibility(manifest, box)
    return manifest
