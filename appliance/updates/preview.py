"""What a bundle holds, shown to the technician BEFORE it is installed.

Reads the metadata and the signed manifest only (the first target, as appliance-vendor writes
it), through the same checks the agent applies (``verify_metadata``, the manifest's signed hash,
``check_compatibility``), and reports instead of raising: models, versions, who signed each role
against the threshold the trusted root requires, and whether this box can run the model. It
decides nothing: the install verifies the whole bundle again, byte for byte.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from tuf.api import exceptions
from tuf.api._payload import Root
from tuf.api.metadata import Metadata

from appliance.errors import ApplianceError
from appliance.updates.bundle import TARGETS_DIR, RawMetadata, open_bundle, read_metadata
from appliance.updates.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    BoxProfile,
    Manifest,
    check_compatibility,
    parse_manifest,
)
from appliance.updates.verify import AcceptedMetadata, TrustedState, verify_metadata

SIGNED_ROLES = ("targets", "snapshot", "timestamp")


@dataclass(frozen=True)
class RoleSignatures:
    role: str
    signed_by: tuple[str, ...]  # key ids (16 hex digits) with a valid signature
    threshold: int

    @property
    def met(self) -> bool:
        return len(self.signed_by) >= self.threshold

    def __str__(self) -> str:
        verdict = "threshold met" if self.met else "THRESHOLD NOT MET"
        keys = ", ".join(self.signed_by) or "no trusted key"
        return f"{self.role}: {len(self.signed_by)} of {self.threshold} needed ({keys}) {verdict}"


@dataclass(frozen=True)
class BundlePreview:
    file: str
    size: int
    bundle_version: int | None = None
    root_version: int | None = None
    manifest: Manifest | None = None
    signers: tuple[RoleSignatures, ...] = ()
    compatibility: str = ""  # what the model needs against what the box has
    compatible: bool = False
    problem: str | None = None  # why the install would be refused, as far as the preview sees

    @property
    def installable(self) -> bool:
        return self.problem is None and self.compatible


class _Stop(Exception):
    """The preview ends early: ``preview`` says how far it got and why."""

    def __init__(self, preview: BundlePreview) -> None:
        super().__init__(preview.problem)
        self.preview = preview


def preview_bundle(path: Path, trusted: TrustedState, floor: int, box: BoxProfile) -> BundlePreview:
    """Describe the bundle at ``path``; never raises for a bad bundle (``problem`` says why)."""
    size = path.stat().st_size if path.exists() else 0
    try:
        raw, accepted, data, digest = _read_head(path, size, trusted, floor)
    except _Stop as stop:
        return stop.preview
    partial = BundlePreview(path.name, size, accepted.version, accepted.root_version,
                            signers=_signatures(raw, accepted.trusted.root))  # fmt: skip
    if hashlib.sha256(data).hexdigest() != digest:
        problem = "the manifest's hash differs from the signed one: do not install this bundle"
        return replace(partial, problem=problem)
    try:
        manifest = parse_manifest(data)
    except ApplianceError as exc:
        return replace(partial, problem=str(exc))
    need = manifest.compatibility
    kinds = ", ".join(sorted(box.device_kinds()))
    wants = (
        f"needs OpenVINO >= {need.min_openvino} on {', '.join(sorted(need.devices))}; this box: "
        f"OpenVINO {box.openvino_version.split('-')[0]}, {kinds}"
    )
    partial = replace(partial, manifest=manifest, compatibility=wants)
    try:
        check_compatibility(manifest, box)
    except ApplianceError as exc:
        return replace(partial, problem=exc.message)
    return replace(partial, compatible=True)


def _read_head(
    path: Path, size: int, trusted: TrustedState, floor: int
) -> tuple[RawMetadata, AcceptedMetadata, bytes, str]:
    """The metadata (verified) and the manifest's bytes with their signed SHA-256."""
    try:
        with open_bundle(path) as reader:
            raw, first = read_metadata(reader)
            try:
                accepted = verify_metadata(raw, trusted, floor)
            except ApplianceError as exc:
                signers = _signatures(raw, trusted.root)
                raise _Stop(
                    BundlePreview(path.name, size, signers=signers, problem=str(exc))
                ) from exc
            manifest_path = next(p for p in accepted.targets if p.endswith(f"/{MANIFEST_NAME}"))
            target = accepted.targets[manifest_path]
            if (
                first is None
                or first.name != f"{TARGETS_DIR}/{manifest_path}"
                or first.size != target.length
                or target.length > MAX_MANIFEST_BYTES
            ):
                problem = "the manifest is not the first file after the metadata, at its length"
                raise _Stop(BundlePreview(path.name, size, accepted.version, problem=problem))
            reader.allow(target.length, 1)
            data = reader.read(first, target.length)
    except ApplianceError as exc:
        raise _Stop(BundlePreview(path.name, size, problem=str(exc))) from exc
    return raw, accepted, data, target.hashes.get("sha256", "")


def _signatures(raw: RawMetadata, root_bytes: bytes) -> tuple[RoleSignatures, ...]:
    """Who signed each top role, judged by ``root_bytes`` (the root the bundle would be under)."""
    try:
        root = Metadata[Root].from_bytes(root_bytes).signed
    except exceptions.RepositoryError:
        return ()
    out = []
    for role in SIGNED_ROLES:
        try:
            md = Metadata.from_bytes(getattr(raw, role))
        except exceptions.RepositoryError:
            out.append(RoleSignatures(role, (), root.roles[role].threshold))
            continue
        result = root.get_verification_result(role, md.signed_bytes, md.signatures)
        out.append(RoleSignatures(role, tuple(sorted(k[:16] for k in result.signed)),
                                  result.threshold))  # fmt: skip
    return tuple(out)
