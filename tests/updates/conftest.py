"""A vendor repository simulator: real Ed25519 keys, real TUF metadata, real bundle files.

Honest bundles come from ``provisioning.vendor.build_bundle`` (the vendor's own code path, its
self-check included). Attack bundles are made from the same pieces (``sign_roles``,
``write_bundle``) without the vendor's guards, or by rewriting a good bundle's tar members.
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import TargetFile

from appliance.config import Config
from appliance.identity.roles import Role
from appliance.runtime import Runtime, open_runtime
from appliance.trust import core
from appliance.trust.tpm import open_tpm
from appliance.updates import BoxProfile, TrustedState, VerifiedBundle, verify_bundle
from appliance.updates.agent import import_vendor_root
from appliance.updates.bundle import write_bundle
from appliance.updates.manifest import load_model_dir
from appliance.updates.wiring import make_agent
from provisioning.vendor import (
    RoleSigners,
    build_bundle,
    hash_targets,
    init_repo,
    root_chain,
    rotate_root,
    sign_roles,
)

BOX = BoxProfile("2024.4.0-16579-c3152d32c9c-releases/2024/4", frozenset({"CPU", "GPU.0"}))
NOT_BEFORE = datetime(2026, 12, 1, tzinfo=UTC)
MODEL_XML = b'<?xml version="1.0"?>\n<net name="dummy" version="11"><layers/></net>\n'
REFERENCE = b"case-id,label\n1,0\n2,1\n"

PASSWORD = "a long enough passphrase"

Member = tuple[tarfile.TarInfo, bytes | None]


@contextlib.contextmanager
def provisioned_box(config: Config, root: bytes) -> Iterator[tuple[Runtime, str]]:
    """A box as a technician leaves it: TPM enrolled, an admin, the technician ``tech`` (password
    PASSWORD) and the vendor root ``root`` imported. Yields the runtime and tech's token."""
    with open_tpm(config.device_tcti()) as tpm:
        core.enroll(tpm, config)
    with open_runtime(config) as rt:
        rt.identity.bootstrap_admin("alice", "correct horse battery staple")
        admin, _ = rt.identity.login("alice", "correct horse battery staple")
        rt.identity.add_account(admin, "tech", Role.TECHNICIAN, PASSWORD)
        _, issued = rt.identity.login("tech", PASSWORD)
        import_vendor_root(make_agent(rt, "tech").paths, root)
        yield rt, issued.token


def model_bin(version: str) -> bytes:
    """Dummy weights, different for each model version, 4 KiB long."""
    seed = version.encode()
    return (seed * (4096 // len(seed) + 1))[:4096]


def manifest_doc(name: str, version: str, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "manifest_version": 1,
        "name": name,
        "version": version,
        "task": "imaging-anomaly",
        "inputs": [{"name": "image", "shape": [1, 3, 224, 224], "dtype": "f32"}],
        "outputs": [{"name": "score", "shape": [1, 1], "dtype": "f32"}],
        "compatibility": {"min_openvino": "2024.0", "devices": ["CPU", "GPU", "NPU"]},
        "reference": {
            "files": ["reference/labels.csv"],
            "metric": "auc",
            "expected": 0.91,
            "tolerance": 0.02,
        },
    }
    doc.update(changes)
    return doc


def write_model(folder: Path, name: str, version: str, **changes: Any) -> Path:
    """A valid model folder (dummy IR, real manifest) for ``name`` ``version``."""
    (folder / "reference").mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest_doc(name, version, **changes)))
    (folder / "model.xml").write_bytes(MODEL_XML)
    (folder / "model.bin").write_bytes(model_bin(version))
    (folder / "reference" / "labels.csv").write_bytes(REFERENCE)
    return folder


def new_keys(n: int) -> list[CryptoSigner]:
    return [CryptoSigner.generate_ed25519() for _ in range(n)]


@dataclass
class RepoSim:
    """A vendor repository in ``top``: root 2 of 3, targets 2 of 3, one snapshot, one timestamp."""

    top: Path

    def __post_init__(self) -> None:
        self.repo, self.out = self.top / "repo", self.top / "out"
        self.out.mkdir(parents=True)
        self.root_keys = new_keys(3)
        self.targets_keys = new_keys(3)
        self.snapshot_key, self.timestamp_key = new_keys(2)
        keys = {
            "targets": [k.public_key for k in self.targets_keys],
            "snapshot": [self.snapshot_key.public_key],
            "timestamp": [self.timestamp_key.public_key],
        }
        expires = NOT_BEFORE + timedelta(days=3650)
        init_repo(self.repo, self.root_keys, 2, keys, 2, expires)
        self.count = 0

    def signers(self, targets: Sequence[CryptoSigner] | None = None) -> RoleSigners:
        chosen = self.targets_keys[:2] if targets is None else targets
        return RoleSigners(chosen, [self.snapshot_key], [self.timestamp_key])

    def model(self, version: str = "1.0.0", name: str = "chest-xray", **changes: Any) -> Path:
        self.count += 1
        return write_model(self.top / "models" / f"{self.count}", name, version, **changes)

    def build(
        self,
        version: str = "1.0.0",
        *,
        name: str = "chest-xray",
        not_before: datetime = NOT_BEFORE,
        compress: bool = False,
        targets: Sequence[CryptoSigner] | None = None,
        **changes: Any,
    ) -> Path:
        """An honest bundle, through the vendor's build_bundle (self-check included)."""
        out = self.out / f"b{self.count + 1}.aplbundle"
        built = build_bundle(
            self.model(version, name, **changes),
            self.repo,
            self.signers(targets),
            out,
            not_before=not_before,
            compress=compress,
        )
        return built.path

    def forge(
        self,
        number: int,
        signers: RoleSigners,
        *,
        version: str = "1.0.0",
        not_before: datetime = NOT_BEFORE,
        expires: datetime | None = None,
        hashes: Sequence[str] = ("sha256",),
        extra: Mapping[str, bytes] | None = None,
    ) -> Path:
        """A bundle signed by ``signers`` with none of the vendor tool's guards: its targets
        hashed with ``hashes``; ``extra`` files (name in the model folder: bytes) are written
        into the folder after it was read, so they replace a listed file or ride along unlisted."""
        folder = self.model(version)
        manifest, files = load_model_dir(folder)
        for name, data in (extra or {}).items():
            (folder / name).write_bytes(data)
            files[name] = folder / name
        targets = hash_targets(manifest, files)
        if list(hashes) != ["sha256"]:
            targets = {p: TargetFile.from_file(p, str(files[p.split("/", 2)[2]]), list(hashes))
                       for p in targets}  # fmt: skip
        until = expires or not_before + timedelta(days=365)
        metadata = sign_roles(targets, number, not_before, until, signers)
        chain = root_chain(self.repo)
        members = [(f"{i + 1}.root.json", data) for i, data in enumerate(chain)]
        members += [(n, metadata[n]) for n in ("timestamp.json", "snapshot.json", "targets.json")]
        target_files = [(f"{manifest.prefix}/{n}", path) for n, path in files.items()]
        path = self.out / f"forged-{number}-{self.count}.aplbundle"
        with path.open("wb") as fh:
            write_bundle(fh, members, target_files, mtime=0)
        return path

    def rotate(
        self, old: Sequence[CryptoSigner], new_root: Sequence[CryptoSigner] = (), **changes: Any
    ) -> None:
        rotate_root(self.repo, old, new_root, changes, NOT_BEFORE + timedelta(days=3650))

    def first_root(self) -> bytes:
        return root_chain(self.repo)[0]

    def trusted(self) -> TrustedState:
        """A freshly provisioned box: it trusts root v1."""
        return TrustedState.from_root(self.first_root())


@pytest.fixture
def sim(tmp_path: Path) -> RepoSim:
    return RepoSim(tmp_path)


def verify(
    path: Path, trusted: TrustedState, floor: int = 0, box: BoxProfile = BOX
) -> VerifiedBundle:
    return verify_bundle(path, trusted, floor, box)


# --- rewriting bundles (test side: reads the tar trustingly) -------------------------------------


def read_members(path: Path) -> list[Member]:
    with tarfile.open(path, "r:*") as tar:
        out: list[Member] = []
        for info in tar.getmembers():
            fh = tar.extractfile(info) if info.isreg() else None
            out.append((info, fh.read() if fh else None))
        return out


def write_members(path: Path, members: Sequence[Member], *, compress: bool = False) -> Path:
    with tarfile.open(path, "w:gz" if compress else "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def file_member(name: str, data: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def rewrite(path: Path, edit: Callable[[list[Member]], list[Member]], suffix: str = "evil") -> Path:
    """A copy of the bundle at ``path`` with its member list passed through ``edit``."""
    out = path.with_name(f"{path.stem}-{suffix}.aplbundle")
    return write_members(out, edit(read_members(path)))


def replace(path: Path, name_end: str, data: bytes | Callable[[bytes], bytes]) -> Path:
    """A copy with the member whose name ends in ``name_end`` holding other bytes."""

    def edit(members: list[Member]) -> list[Member]:
        out = []
        for info, old in members:
            new = old
            if info.name.endswith(name_end) and old is not None:
                new = data(old) if callable(data) else data
            out.append((info, new))
        return out

    return rewrite(path, edit)
