"""Build the update agent from the runtime: TPM-backed key and floor, audit, OpenVINO gate."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping

from appliance.audit.records import AuditEvent, Outcome
from appliance.runtime import Runtime
from appliance.trust import core
from appliance.trust.counter import TpmCounter
from appliance.trust.keys import KeyName
from appliance.trust.tpm import open_tpm
from appliance.updates.agent import (
    AgentPaths,
    Phase,
    ProgressEvent,
    UpdateAgent,
    import_vendor_root,
)
from appliance.updates.manifest import MODEL_BIN, MODEL_XML, BoxProfile, Manifest

CRASH_HOOK = "APPLIANCE_UPDATE_CRASH_AFTER"  # fault injection for the power-cut tests only


def make_agent(
    rt: Runtime, actor: str, on_progress: Callable[[ProgressEvent], None] | None = None
) -> UpdateAgent:
    """The agent for this box, its OpenVINO runtime created once here."""
    import openvino as ov

    from appliance.updates.validate import validate

    ov_core = ov.Core()
    device = "CPU"

    def model_key() -> bytes:
        with open_tpm(rt.tcti) as tpm:
            return core.key_store(rt.config).unseal(tpm, KeyName.MODEL_STORE)

    def gate(
        manifest: Manifest,
        files: Mapping[str, bytes | bytearray],
        progress: Callable[[int, int], None],
    ) -> tuple[bool, str]:
        reference = {f: bytes(files[f]) for f in manifest.reference.files}
        result = validate(
            manifest, bytes(files[MODEL_XML]), files[MODEL_BIN], reference,
            core=ov_core, device=device, progress=progress,
        )  # fmt: skip
        return result.passed, result.reason

    crash = os.environ.get(CRASH_HOOK)
    return UpdateAgent(
        AgentPaths(rt.config.updates_dir, rt.config.models_dir),
        key=model_key,
        counter=floor_counter(rt),
        audit=rt.auditor,
        validator=gate,
        box=BoxProfile(ov.get_version(), frozenset(ov_core.available_devices)),
        actor=actor,
        on_progress=on_progress,
        crash_after=Phase(crash) if crash else None,
    )


def floor_counter(rt: Runtime) -> TpmCounter:
    """The anti-rollback floor of this box (the TPM is asked at each call, not here)."""
    return TpmCounter(rt.tcti, rt.config.counter_index)


def trust_vendor_root(rt: Runtime, data: bytes, actor: str) -> str:
    """Make ``data`` the vendor root this box trusts (checked first), audit it; returns its
    SHA-256, the fingerprint the technician compares with the vendor's."""
    import_vendor_root(AgentPaths(rt.config.updates_dir, rt.config.models_dir), data)
    fingerprint = hashlib.sha256(data).hexdigest()
    rt.audit.append(
        AuditEvent.CONFIG_CHANGE, actor=actor, outcome=Outcome.SUCCESS,
        detail={"action": "import-vendor-root", "sha256": fingerprint},
    )  # fmt: skip
    return fingerprint
