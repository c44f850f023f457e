"""``appliance-vendor``: the vendor's offline tool for signing keys, the TUF repository and bundles.

It runs on the vendor's workstation, never on the box. The repository folder keeps the root chain
(``metadata/<N>.root.json``) and the last bundle's targets/snapshot/timestamp, so each bundle gets
a higher number. Private keys are Ed25519 PKCS#8 PEM files wherever the vendor keeps them; a
``.pub`` file next to each holds the public key, for rotations done without the private file.

Every bundle is checked with the box's own verifier before it is reported as written.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

# securesystemslib.signer and tuf.api.metadata re-export these without __all__; importing them
# from where they are defined keeps mypy --strict quiet without a per-package override.
from securesystemslib.signer._crypto_signer import CryptoSigner
from securesystemslib.signer._key import Key, SSlibKey
from securesystemslib.signer._signer import Signer
from tuf.api._payload import MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.metadata import Metadata

from appliance.errors import ApplianceError
from appliance.fsutil import atomic_write, fsync_dir
from appliance.updates.bundle import BUNDLE_SUFFIX, NullSink, bundle_file_name, write_bundle
from appliance.updates.errors import VendorRepoError
from appliance.updates.manifest import BoxProfile, Manifest, load_model_dir
from appliance.updates.verify import NOT_BEFORE_FIELD, TIME_FORMAT, TrustedState, verify_bundle

ROLES = ("root", "targets", "snapshot", "timestamp")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class RoleSigners:
    """The private keys that sign one bundle's metadata."""

    targets: Sequence[Signer]
    snapshot: Sequence[Signer]
    timestamp: Sequence[Signer]


@dataclass(frozen=True)
class BuiltBundle:
    path: Path
    manifest: Manifest
    version: int
    root_version: int
    not_before: datetime
    size: int
    sha256: str
    # SHA-256 of the signed timestamp metadata: it pins every other file, and the box reports it
    # as the bundle digest in every result's provenance.
    bundle_id: str = ""


def _quiet(_: str) -> None:
    pass


# --- keys ---------------------------------------------------------------------------------------


def create_key(out: Path, role: str) -> str:
    """Write a new Ed25519 private key to ``out`` (0600) and its public part to ``out.pub``."""
    pub = out.with_name(out.name + ".pub")
    for path in (out, pub):
        if path.exists():
            raise VendorRepoError(
                f"{path} exists.", "Choose another file; keys are never replaced."
            )
    signer = CryptoSigner.generate_ed25519()
    key = signer.public_key
    atomic_write(out, signer.private_bytes, mode=0o600)
    public = {"role": role, "keyid": key.keyid, **key.to_dict()}
    atomic_write(pub, json.dumps(public, indent=1).encode() + b"\n", mode=0o644)
    return key.keyid


def load_signer(path: Path) -> CryptoSigner:
    """The Ed25519 private key in PEM file ``path``."""
    try:
        private = load_pem_private_key(path.read_bytes(), None)
    except OSError as exc:
        raise VendorRepoError(
            f"cannot read key {path}: {exc.strerror}.", "Check the path."
        ) from exc
    except (ValueError, TypeError) as exc:
        raise VendorRepoError(
            f"{path} is not an unencrypted PEM private key: {exc}.",
            "Use a key written by `appliance-vendor keys create`.",
        ) from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise VendorRepoError(f"{path} is not an Ed25519 key.", "Create one with `keys create`.")
    return CryptoSigner(private)


def load_public_key(path: Path, role: str) -> SSlibKey:
    """The public key in ``path``: a ``.pub`` file of ``role``, or a private key file."""
    if path.suffix != ".pub":
        return load_signer(path).public_key
    try:
        doc = json.loads(path.read_text())
        key = SSlibKey.from_dict(doc.pop("keyid"), {k: v for k, v in doc.items() if k != "role"})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VendorRepoError(
            f"{path} is not a public key file: {exc}.", "Check the path."
        ) from exc
    if doc.get("role") != role:
        raise VendorRepoError(
            f"{path} is a {doc.get('role')} key, given as a {role} key.",
            "Use one key per role; create keys with `appliance-vendor keys create --role`.",
        )
    return key


def check_key_role(
    path: Path, key: Key, role: str, root: Root | None, *, new: bool = False
) -> None:
    """Refuse the key read from ``path`` where a ``role`` key is asked for, if it has another role.

    Its role is the one ``root`` lists it for, else the one its ``.pub`` file names. With a
    ``root``, a key it lists for no role is refused too, unless it is ``new`` (a key a rotation
    brings into the role). Raises VendorRepoError naming the key's role and the one asked for.
    """
    if root is not None:
        listed = [r for r in ROLES if key.keyid in root.roles[r].keyids]
        if role in listed:
            return
        if listed:
            raise _wrong_role(path, " and ".join(listed), f"root v{root.version} lists it", role)
        if not new:
            raise VendorRepoError(
                f"{path} (keyid {key.keyid[:16]}) is not a key of root v{root.version}, given as "
                f"a {role} key.",
                f"Give the {role} key files root v{root.version} lists (the keyids are in the "
                ".pub files), or add the key to the role with `appliance-vendor root rotate`.",
            )
    pub = _pub_role(path, key.keyid)
    if pub is not None and pub != role:
        raise _wrong_role(path, pub, "its .pub file says so", role)


def _wrong_role(path: Path, owner: str, evidence: str, role: str) -> VendorRepoError:
    return VendorRepoError(
        f"{path} is a {owner} key ({evidence}), given as a {role} key.",
        f"Give a {role} key here (`appliance-vendor keys create --role {role}` makes one; its "
        ".pub file names the role): a key signs for one role only.",
    )


def _pub_role(path: Path, keyid: str) -> str | None:
    """The role the ``.pub`` file next to private key file ``path`` names, if it is that key's."""
    if path.suffix == ".pub":
        return None
    try:
        doc = json.loads(path.with_name(path.name + ".pub").read_text())
    except (OSError, ValueError):
        return None
    role = doc.get("role") if isinstance(doc, dict) and doc.get("keyid") == keyid else None
    return role if role in ROLES else None


# --- repository ---------------------------------------------------------------------------------


def root_chain(repo: Path) -> list[bytes]:
    """Every root version of the repository, from 1."""
    chain, version = [], 1
    while (path := repo / "metadata" / f"{version}.root.json").exists():
        chain.append(path.read_bytes())
        version += 1
    if not chain:
        raise _not_a_repository(repo)
    return chain


def current_root(repo: Path) -> Root:
    """The repository's newest root, read without its lock (for checks before the work)."""
    return Metadata[Root].from_bytes(root_chain(repo)[-1]).signed


def _not_a_repository(repo: Path) -> VendorRepoError:
    return VendorRepoError(f"{repo} is not a vendor repository.", "Run `repo init` first.")


@contextlib.contextmanager
def _locked(repo: Path, *, create: bool = False) -> Iterator[None]:
    """Hold the repository's lock: bundle numbers are never handed out twice.

    Only ``create`` (``repo init``) makes the folder; for every other command a folder that is
    not a repository is refused before anything, the lock file included, is written into it.
    """
    if not create and not (repo / "metadata" / "1.root.json").is_file():
        raise _not_a_repository(repo)
    try:
        repo.mkdir(parents=True, exist_ok=True)
        fh = (repo / ".lock").open("a")
    except OSError as exc:
        why = "it is a file" if isinstance(exc, FileExistsError) else exc.strerror
        raise VendorRepoError(
            f"cannot use {repo} as the vendor repository: {why}.",
            "Give --repo a folder: the vendor repository, or a new one for `repo init`.",
        ) from exc
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _set_role(root: Root, role: str, keys: Sequence[Key] | None, threshold: int | None) -> None:
    if keys is not None:
        for keyid in list(root.roles[role].keyids):
            root.revoke_key(keyid, role)
        for key in keys:
            root.add_key(key, role)
    if threshold is not None:
        root.roles[role].threshold = threshold
    count, need = len(root.roles[role].keyids), root.roles[role].threshold
    if not 1 <= need <= count:
        raise VendorRepoError(
            f"the {role} role would need {need} signatures from {count} keys.",
            f"Give a --{role}-threshold between 1 and the number of {role} keys.",
        )


def _sign_root(new: Metadata[Root], signers: Sequence[Signer], previous: Root | None) -> bytes:
    for signer in {s.public_key.keyid: s for s in signers}.values():
        new.sign(signer, append=True)
    result = new.signed.get_root_verification_result(previous, new.signed_bytes, new.signatures)
    if not result.verified:
        old = result.first
        raise VendorRepoError(
            f"root v{new.signed.version} has {len(old.signed)} of {old.threshold} signatures the "
            f"previous root needs and {len(result.second.signed)} of {result.second.threshold} "
            "its own root keys need.",
            "Sign with enough old root keys (--sign-with) and every new root key (--root-key).",
        )
    return new.to_bytes()


def init_repo(
    repo: Path,
    root_signers: Sequence[Signer],
    root_threshold: int,
    keys: Mapping[str, Sequence[Key]],
    targets_threshold: int,
    expires: datetime,
) -> Path:
    """Create ``metadata/1.root.json``; ``keys`` maps targets/snapshot/timestamp to their keys.

    The root is made and signed before the folder is touched: a refused one leaves nothing.
    """
    root = Metadata(Root(expires=expires, consistent_snapshot=False))
    _set_role(root.signed, "root", [s.public_key for s in root_signers], root_threshold)
    _set_role(root.signed, "targets", keys["targets"], targets_threshold)
    for role in ("snapshot", "timestamp"):
        _set_role(root.signed, role, keys[role], 1)
    signed = _sign_root(root, root_signers, None)
    with _locked(repo, create=True):
        path = repo / "metadata" / "1.root.json"
        if path.exists():
            raise VendorRepoError(f"{repo} already has a root.", "Use `root rotate` to change it.")
        atomic_write(path, signed, mode=0o644)
        return path


def rotate_root(
    repo: Path,
    old_signers: Sequence[Signer],
    new_root_signers: Sequence[Signer] = (),
    changes: Mapping[str, tuple[Sequence[Key] | None, int | None]] | None = None,
    expires: datetime | None = None,
) -> Path:
    """Write root N+1 with ``changes`` (role -> new keys or None, new threshold or None).

    New root keys sign through ``new_root_signers``; the old root's threshold through
    ``old_signers``. Without changes this only re-signs root with a later expiry.
    """
    with _locked(repo):
        chain = root_chain(repo)
        current = Metadata[Root].from_bytes(chain[-1]).signed
        new = Metadata(copy.deepcopy(current))
        new.signed.version += 1
        new.signed.expires = expires or datetime.now(UTC) + timedelta(days=365)
        changes = dict(changes or {})
        if new_root_signers:
            threshold = changes.get("root", (None, None))[1]
            changes["root"] = ([s.public_key for s in new_root_signers], threshold)
        for role, (keys, threshold) in changes.items():
            _set_role(new.signed, role, keys, threshold)
        signers = [*old_signers, *new_root_signers]
        path = repo / "metadata" / f"{new.signed.version}.root.json"
        atomic_write(path, _sign_root(new, signers, current), mode=0o644)
        return path


# --- bundles ------------------------------------------------------------------------------------


def hash_targets(
    manifest: Manifest, files: dict[str, Path], progress: Progress = _quiet
) -> dict[str, TargetFile]:
    """Signed length and SHA-256 of every model file, by target path ``<name>/<version>/...``."""
    out = {}
    for name, local in files.items():
        progress(f"hashing {name} ({local.stat().st_size} bytes)")
        path = f"{manifest.prefix}/{name}"
        out[path] = TargetFile.from_file(path, str(local), ["sha256"])
    return out


def sign_roles(
    targets: dict[str, TargetFile],
    version: int,
    not_before: datetime,
    expires: datetime,
    signers: RoleSigners,
) -> dict[str, bytes]:
    """Sign targets, snapshot and timestamp, all as ``version``; snapshot and timestamp pin the
    length and hash of the role below them. Returns the bytes by file name."""
    nb = {NOT_BEFORE_FIELD: not_before.strftime(TIME_FORMAT)}
    files: dict[str, bytes] = {}
    md_targets = Metadata(Targets(version, None, expires, targets, None, nb))
    files["targets.json"] = _signed(md_targets, signers.targets)
    meta = {"targets.json": MetaFile.from_data(version, files["targets.json"], ["sha256"])}
    files["snapshot.json"] = _signed(
        Metadata(Snapshot(version, None, expires, meta)), signers.snapshot
    )
    snap = MetaFile.from_data(version, files["snapshot.json"], ["sha256"])
    files["timestamp.json"] = _signed(
        Metadata(Timestamp(version, None, expires, snap)), signers.timestamp
    )
    return files


def _signed(
    md: Metadata[Targets] | Metadata[Snapshot] | Metadata[Timestamp], signers: Sequence[Signer]
) -> bytes:
    for signer in signers:
        md.sign(signer, append=True)
    return md.to_bytes()


def check_signers(root: Root, signers: RoleSigners) -> None:
    """Refuse signers that are not the root's keys for their role or fall short of its threshold."""
    for role in ("targets", "snapshot", "timestamp"):
        given: Sequence[Signer] = getattr(signers, role)
        keyids = {s.public_key.keyid for s in given}
        foreign = sorted(k[:16] for k in keyids - set(root.roles[role].keyids))
        need = root.roles[role].threshold
        if foreign or len(keyids) < need:
            problem = f"keys {', '.join(foreign)} are not" if foreign else "too few keys given"
            raise VendorRepoError(
                f"root v{root.version} needs {need} {role} signatures from its {role} keys; "
                f"{problem}.",
                f"Pass the right --{role}-key files (see the keyids in the .pub files).",
            )


def build_bundle(
    model_dir: Path,
    repo: Path,
    signers: RoleSigners,
    out: Path,
    *,
    not_before: datetime | None = None,
    version: int | None = None,
    expires_days: int = 365,
    compress: bool = False,
    progress: Progress = _quiet,
) -> BuiltBundle:
    """Build, sign and write one bundle for ``model_dir``; check it as a box would.

    ``out`` is an existing folder (the file is named ``<name>-<version>.aplbundle``) or a file.
    The repository's bundle number is advanced before the file is written, so a number is never
    used by two different bundles. Raises ManifestError or VendorRepoError, or the box's error
    when the self-check fails (the file is then removed).
    """
    progress(f"checking model folder {model_dir}")
    manifest, files = load_model_dir(model_dir)
    path = out / bundle_file_name(manifest.name, str(manifest.version)) if out.is_dir() else out
    if path.suffix != BUNDLE_SUFFIX or not path.parent.is_dir():
        raise VendorRepoError(
            f"{out} is neither an existing folder nor a *{BUNDLE_SUFFIX} file in one.",
            "Give an existing folder (a USB mount) or a bundle file name in one.",
        )
    nb = (not_before or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    with _locked(repo):
        chain = root_chain(repo)
        number = _next_version(repo, chain[-1], signers, nb, version)
        targets = hash_targets(manifest, files, progress)
        progress(f"signing bundle version {number} (targets with {len(signers.targets)} keys)")
        metadata = sign_roles(targets, number, nb, nb + timedelta(days=expires_days), signers)
        for name, data in metadata.items():  # reserve the number before anything leaves
            atomic_write(repo / "metadata" / name, data, mode=0o644)
    progress(f"writing {path}")
    members = [(f"{i + 1}.root.json", data) for i, data in enumerate(chain)]
    members += [(n, metadata[n]) for n in ("timestamp.json", "snapshot.json", "targets.json")]
    target_files = [(f"{manifest.prefix}/{n}", files[n]) for n in manifest.files()]
    with _bundle_writer(path) as fh:
        write_bundle(fh, members, target_files, mtime=int(nb.timestamp()), compress=compress)
    return _self_check(path, chain[0], manifest, progress)


@contextlib.contextmanager
def _bundle_writer(path: Path) -> Iterator[BinaryIO]:
    """Write ``path`` through a temporary file in its folder, fsynced, then renamed over it.

    Unlike ``appliance.fsutil.atomic_writer`` the mode is set only where the file system allows
    it: a FAT-formatted USB stick refuses chmod with EPERM.
    """
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise VendorRepoError(
            f"cannot write into {path.parent}: {exc.strerror}.",
            "Check that the folder (the USB stick) is mounted and writable.",
        ) from exc
    tmp = Path(tmp_name)
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise VendorRepoError(
            f"writing {path} failed: {exc}.",
            "Check the free space on the medium and that it is still mounted, then build again.",
        ) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _next_version(
    repo: Path, root_bytes: bytes, signers: RoleSigners, nb: datetime, version: int | None
) -> int:
    """The next bundle number, after checking the root is valid at ``nb`` and the signers."""
    root = Metadata[Root].from_bytes(root_bytes).signed
    if root.is_expired(nb):
        raise VendorRepoError(
            f"root v{root.version} expires on {root.expires:%Y-%m-%d}, before the bundle's "
            f"not-before {nb:%Y-%m-%d}.",
            "Re-sign root with a later expiry: `appliance-vendor root rotate`.",
        )
    check_signers(root, signers)
    last = _last_version(repo)
    number = version if version is not None else last + 1
    if number <= last:
        raise VendorRepoError(
            f"bundle version {number} is not above the last one, {last}.",
            "Omit --version or give a higher one.",
        )
    return number


def _last_version(repo: Path) -> int:
    path = repo / "metadata" / "timestamp.json"
    return Metadata[Timestamp].from_bytes(path.read_bytes()).signed.version if path.exists() else 0


def _self_check(
    path: Path, first_root: bytes, manifest: Manifest, progress: Progress
) -> BuiltBundle:
    progress("checking the bundle as a box would")
    box = BoxProfile(
        str(manifest.compatibility.min_openvino), frozenset(manifest.compatibility.devices)
    )
    try:
        verified = verify_bundle(path, TrustedState(first_root), 0, box, sink=NullSink())
    except ApplianceError:
        path.unlink(missing_ok=True)
        raise
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return BuiltBundle(
        path,
        manifest,
        verified.version,
        verified.root_version,
        verified.not_before,
        path.stat().st_size,
        digest.hexdigest(),
        hashlib.sha256(verified.trusted.timestamp or b"").hexdigest(),
    )
