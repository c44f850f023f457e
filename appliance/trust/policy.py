"""PCR policies computed without a TPM.

Pure functions: the PolicyPCR digest a sealed object is bound to, and the value a PCR will hold
after a series of extends. Computing these offline is what lets the box seal its keys to the PCR
values it *will* have after a planned firmware change (TPM 2.0 Part 3, TPM2_PolicyPCR).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence

from appliance.errors import ConfigError

TPM_CC_POLICY_PCR = 0x0000017F
TPM_ALG_SHA256 = 0x000B
PCR_COUNT = 24
DIGEST_SIZE = 32
ZERO_DIGEST = bytes(DIGEST_SIZE)


def normalize_pcrs(pcrs: Iterable[int]) -> tuple[int, ...]:
    """Return the PCR indexes sorted and de-duplicated; raise ConfigError if any is out of range."""
    out = tuple(sorted(set(pcrs)))
    if not out:
        raise ConfigError("the PCR set is empty.", "Name at least one PCR, for example 7,11.")
    bad = [p for p in out if not 0 <= p < PCR_COUNT]
    if bad:
        raise ConfigError(
            f"PCR index {bad[0]} is out of range.", f"Use PCR indexes from 0 to {PCR_COUNT - 1}."
        )
    return out


def marshal_pcr_selection(pcrs: Sequence[int]) -> bytes:
    """Marshal a TPML_PCR_SELECTION holding one SHA-256 bank with ``pcrs`` selected."""
    bitmap = bytearray(3)
    for pcr in normalize_pcrs(pcrs):
        bitmap[pcr // 8] |= 1 << (pcr % 8)
    return struct.pack(">IHB", 1, TPM_ALG_SHA256, len(bitmap)) + bytes(bitmap)


def pcr_composite_digest(values: Mapping[int, bytes]) -> bytes:
    """SHA-256 of the PCR values concatenated in ascending index order."""
    h = hashlib.sha256()
    for pcr in normalize_pcrs(values):
        value = values[pcr]
        if len(value) != DIGEST_SIZE:
            raise ConfigError(
                f"PCR {pcr} value has {len(value)} bytes, expected {DIGEST_SIZE}.",
                "Give SHA-256 PCR values as 64 hex digits.",
            )
        h.update(value)
    return h.digest()


def pcr_policy_digest(values: Mapping[int, bytes]) -> bytes:
    """The policy digest of a fresh session after TPM2_PolicyPCR over ``values``.

    This is the ``authPolicy`` a sealed object must carry to be unsealable exactly when the PCRs
    in ``values`` hold those values.
    """
    selection = marshal_pcr_selection(list(values))
    data = (
        ZERO_DIGEST
        + struct.pack(">I", TPM_CC_POLICY_PCR)
        + selection
        + pcr_composite_digest(values)
    )
    return hashlib.sha256(data).digest()


def predict_extend(value: bytes, measurements: Iterable[bytes]) -> bytes:
    """The PCR value after extending ``value`` with each SHA-256 measurement in turn."""
    for measurement in measurements:
        if len(measurement) != DIGEST_SIZE:
            raise ConfigError(
                f"a measurement has {len(measurement)} bytes, expected {DIGEST_SIZE}.",
                "Give SHA-256 digests as 64 hex digits.",
            )
        value = hashlib.sha256(value + measurement).digest()
    return value


def differing_pcrs(sealed: Mapping[int, bytes], current: Mapping[int, bytes]) -> tuple[int, ...]:
    """The PCR indexes whose current value differs from the sealed one (or is missing)."""
    return tuple(p for p in sorted(sealed) if current.get(p) != sealed[p])
