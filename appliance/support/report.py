"""The signed health report: what the box is and runs, bound to a TPM2_Quote over its PCRs.

File layout (JSON)::

    {"format": "appliance-health-report/1",
     "body":   {box, versions, hardware, trust, models, update, self_test},
     "pcrs":   {"0": "<sha256 hex>", ...},            # the quoted SHA-256 PCR values
     "quote":  {"attest", "signature", "ak_public"}}  # base64 TPM structures

The quote's qualifying data is the SHA-256 of the body in canonical JSON (:func:`canonical`),
so the body cannot change without breaking the TPM's signature; the quote's PCR digest pins the
``pcrs`` values. The attestation key is a primary under the owner hierarchy: the same key for
every report of this TPM, whose fingerprint (SHA-256 of its TPM2B_PUBLIC) the vendor records when
the box is built. ``appliance-vendor report verify`` checks all three (provisioning/report.py).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import platform
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance import __version__
from appliance.config import Config
from appliance.fsutil import atomic_write
from appliance.setup.selftest import load_selftest
from appliance.setup.site import load_site
from appliance.store.slots import ModelStore
from appliance.trust import core
from appliance.trust.tpm import Quote, Tpm, open_tpm

if TYPE_CHECKING:
    from collections.abc import Sequence

    from appliance.runtime import Runtime

FORMAT = "appliance-health-report/1"
BOOT_PCRS = (0, 1, 2, 3, 4, 5, 6, 7)  # firmware, boot loader, Secure Boot policy


def canonical(body: Mapping[str, Any]) -> bytes:
    """The body's bytes as signed: sorted keys, no spaces, ASCII only."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def ak_fingerprint(ak_public: bytes) -> str:
    """The attestation key's identity, as the vendor records it: SHA-256 of its TPM2B_PUBLIC."""
    return hashlib.sha256(ak_public).hexdigest()


def _default(value: Any) -> Any:
    """JSON for what the encoder does not know: dataclasses, paths, sets."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, frozenset | set):
        return sorted(value)
    return str(value)  # Path and the like


def _plain(value: Any) -> Any:
    """``value`` as plain JSON values (enums are str or int subclasses already)."""
    return json.loads(json.dumps(value, default=_default))


def gather_body(
    config: Config, tpm: Tpm, hardware: Any, openvino: str, actor: str
) -> dict[str, Any]:
    """Everything the vendor's support asks first; no PHI (no studies, notes or results)."""
    site = load_site(config)
    trust = core.state(tpm, config)
    store = ModelStore(config.models_dir)
    models = {}
    for name in store.models():
        state = store.state(name)
        models[name] = {
            "active": state.active.value if state.active else None,
            "slots": {slot.value: _plain(info) for slot, info in sorted(state.slots.items())},
        }
    agent = config.updates_dir / "agent.json"
    selftest = load_selftest(config)
    return {
        "box": {
            "box_id": site.box_id if site else config.box_id,
            "site": site.site if site else None,
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "by": actor,
        },
        "versions": {
            "appliance": __version__,
            "openvino": openvino,
            "python": platform.python_version(),
            "kernel": platform.release(),
        },  # fmt: skip
        "hardware": _plain(hardware),
        "trust": {
            "enrolled": trust.enrolled,
            "sealed_pcrs": list(config.pcrs),
            "floor": trust.floor,
            "lockout": _plain(trust.lockout),
            "keys": _plain(trust.keys),
        },  # fmt: skip
        "models": models,
        "update": json.loads(agent.read_bytes()) if agent.exists() else None,
        "self_test": _plain(selftest) if selftest else None,
    }


def sign(tpm: Tpm, body: Mapping[str, Any], pcrs: tuple[int, ...]) -> dict[str, Any]:
    """The report document: ``body`` with a TPM quote over ``pcrs`` bound to its hash."""
    quote: Quote = tpm.quote(pcrs, hashlib.sha256(canonical(body)).digest())
    return {
        "format": FORMAT,
        "body": dict(body),
        "pcrs": {str(p): v.hex() for p, v in sorted(quote.pcrs.items())},
        "quote": {
            "attest": _b64(quote.attest),
            "signature": _b64(quote.signature),
            "ak_public": _b64(quote.ak_public),
            "ak_fingerprint": ak_fingerprint(quote.ak_public),
        },
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def quoted_pcrs(config: Config) -> tuple[int, ...]:
    return tuple(sorted(set(BOOT_PCRS) | set(config.pcrs)))


def write_report(folder: Path, doc: Mapping[str, Any]) -> Path:
    """``folder/health-<box>-<time>.json``, written atomically; raises StorageError."""
    box = doc["body"]["box"]
    stamp = box["created"].replace(":", "").replace("-", "")
    path = folder / f"health-{box['box_id']}-{stamp}.json"
    atomic_write(path, json.dumps(doc, indent=2).encode() + b"\n", mode=0o644)
    return path


def export_report(
    rt: Runtime, actor: str, role: str | None, folder: Path,
    devices: Sequence[str] | None = None,
) -> tuple[Path, str]:  # fmt: skip
    """Gather, sign and write the report into ``folder``; audit the export. Returns the file and
    the attestation key's fingerprint. ``devices`` (OpenVINO's names) skips asking OpenVINO."""
    import openvino as ov

    from appliance import hardware
    from appliance.audit.records import AuditEvent, Outcome

    detected = hardware.detect(None if devices is not None else ov.Core(), rt.config.state_dir,
                               available=devices, tcti=rt.config.tcti)  # fmt: skip
    with open_tpm(rt.tcti) as tpm:
        body = gather_body(rt.config, tpm, detected, ov.get_version(), actor)
        doc = sign(tpm, body, quoted_pcrs(rt.config))
    path = write_report(folder, doc)
    fingerprint = doc["quote"]["ak_fingerprint"]
    rt.audit.append(
        AuditEvent.EXPORT, actor=actor, role=role, outcome=Outcome.SUCCESS,
        detail={"what": "health-report", "to": str(path), "ak": fingerprint[:16],
                "sha256": hashlib.sha256(canonical(body)).hexdigest()},
    )  # fmt: skip
    return path, fingerprint
