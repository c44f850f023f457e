"""Vendor side: verify a box's signed health report (``appliance-vendor report verify``).

Four independent checks, each reported with what failed, so support knows whether to trust
anything in the file:

* attestation key: the report's key is the one recorded for this box when it was built (its
  fingerprint, ``--ak``): a quote from any other TPM fails here;
* quote signature: the TPM's ECDSA signature over the attestation structure, which must be
  TPM-generated (magic) and a quote;
* body: the quote's qualifying data is the SHA-256 of the report body in canonical JSON;
* PCRs: the quote's PCR digest is the SHA-256 of the listed PCR values, in the quoted order.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tpm2_pytss.constants import TPM2_ALG, TPM2_GENERATED, TPM2_ST
from tpm2_pytss.types import TPM2B_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE

from appliance.support.report import FORMAT, ak_fingerprint, canonical
from appliance.updates.errors import VendorRepoError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{'ok    ' if self.ok else 'FAILED'}  {self.name}: {self.detail}"


def load_report(path: Path) -> dict[str, Any]:
    """The report document; VendorRepoError when it is not one."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise VendorRepoError(
            f"cannot read {path} as JSON: {exc}.", "Ask for the file again."
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise VendorRepoError(
            f"{path} is not a health report ({FORMAT}).", "Ask for the file again."
        )
    return doc


def _b64(doc: dict[str, Any], key: str) -> bytes:
    try:
        return base64.b64decode(doc["quote"][key], validate=True)
    except (KeyError, TypeError, binascii.Error) as exc:
        raise VendorRepoError(f"the report's quote.{key} is missing or not base64.") from exc


def verify_report(doc: dict[str, Any], expected_ak: str) -> list[Check]:
    """Every check's result (pure: the document and the box's recorded AK fingerprint)."""
    attest_bytes, sig_bytes, ak_bytes = (_b64(doc, k) for k in ("attest", "signature", "ak_public"))
    checks = [_check_ak(ak_bytes, expected_ak)]
    try:
        attest, _ = TPMS_ATTEST.unmarshal(attest_bytes)
        signature, _ = TPMT_SIGNATURE.unmarshal(sig_bytes)
        public, _ = TPM2B_PUBLIC.unmarshal(ak_bytes)
    except Exception as exc:
        return [*checks, Check("quote", False, f"the TPM structures do not parse ({exc})")]
    checks.append(_check_signature(attest, attest_bytes, signature, public))
    checks.append(_check_body(bytes(attest.extraData), doc.get("body", {})))
    checks.append(_check_pcrs(attest, doc.get("pcrs", {})))
    return checks


def _check_body(quoted: bytes, body: Any) -> Check:
    digest = hashlib.sha256(canonical(body)).digest()
    if quoted == digest:
        return Check("body", True, "its SHA-256 is the quoted qualifying data")
    return Check("body", False, "the body was changed after it was quoted (quoted "
                 f"{quoted.hex()[:16]}…, the body hashes to {digest.hex()[:16]}…)")  # fmt: skip


def _check_ak(ak_public: bytes, expected: str) -> Check:
    got = ak_fingerprint(ak_public)
    if got == expected.strip().lower():
        return Check("attestation key", True, f"{got[:16]}… is the key recorded for this box")
    return Check("attestation key", False, f"{got[:16]}… is not the key recorded for this box "
                 f"({expected[:16]}…): the quote comes from another TPM")  # fmt: skip


def _check_signature(attest: Any, data: bytes, signature: Any, public: Any) -> Check:
    if attest.magic != TPM2_GENERATED.VALUE or attest.type != TPM2_ST.ATTEST_QUOTE:
        return Check("quote signature", False, "the structure is not a TPM-generated quote")
    if signature.sigAlg != TPM2_ALG.ECDSA:
        return Check("quote signature", False, f"unexpected signature algorithm {signature.sigAlg}")
    try:
        key = serialization.load_pem_public_key(public.publicArea.to_pem())
        ecdsa = signature.signature.ecdsa
        der = encode_dss_signature(
            int.from_bytes(bytes(ecdsa.signatureR), "big"),
            int.from_bytes(bytes(ecdsa.signatureS), "big"),
        )
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return Check("quote signature", False, "the attestation key is not an ECC key")
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return Check("quote signature", False, "the TPM's signature does not match the quote")
    except ValueError as exc:
        return Check("quote signature", False, f"the attestation key is unusable ({exc})")
    return Check("quote signature", True, "made by the attestation key over this quote")


def _check_pcrs(attest: Any, pcrs: Any) -> Check:
    quote = attest.attested.quote
    order: list[int] = []
    for bank in quote.pcrSelect:
        if int(bank.hash) != TPM2_ALG.SHA256:
            return Check("PCRs", False, "the quote covers a bank other than SHA-256")
        bitmap = bytes(bank.pcrSelect)[: bank.sizeofSelect]
        order += [i * 8 + b for i, byte in enumerate(bitmap) for b in range(8) if byte >> b & 1]
    try:
        values = {int(k): bytes.fromhex(v) for k, v in dict(pcrs).items()}
    except (TypeError, ValueError):
        return Check("PCRs", False, "the report's PCR values are not hex")
    if sorted(values) != order:
        return Check("PCRs", False, f"the report lists PCRs {sorted(values)}, the quote {order}")
    digest = hashlib.sha256(b"".join(values[p] for p in order)).digest()
    if digest != bytes(quote.pcrDigest):
        return Check("PCRs", False, "the PCR values differ from those the TPM quoted")
    return Check("PCRs", True, f"PCR {','.join(map(str, order))} as quoted")
