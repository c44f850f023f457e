"""The recovery code: a human-typable secret that wraps the appliance's keys.

At enrollment a random code is generated and shown once. The keys are wrapped under a key derived
from it with scrypt, then AES-256-GCM. When the PCRs change (firmware update, a different boot
path) and the TPM will no longer unseal, a technician types the code and the keys are re-sealed to
the current PCRs. Without the code nothing unseals: the wrap is useless on its own.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from appliance.errors import RecoveryCodeError

# Crockford's base32 alphabet: no I, L, O, U, so a code read aloud or from paper is unambiguous.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CONFUSABLE = str.maketrans({"I": "1", "L": "1", "O": "0", "U": "V"})
_GROUPS, _GROUP_LEN = 8, 5  # 40 symbols x 5 bits = 200 bits
_AAD = b"appliance-recovery-wrap-v1"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


def generate_code() -> str:
    """A fresh recovery code, for example ``7K3QM-0ZC9T-...`` (eight groups of five)."""
    symbols = "".join(secrets.choice(_ALPHABET) for _ in range(_GROUPS * _GROUP_LEN))
    return "-".join(symbols[i : i + _GROUP_LEN] for i in range(0, len(symbols), _GROUP_LEN))


def normalize_code(code: str) -> str:
    """Canonical form of a typed code: upper case, no spaces or dashes, look-alikes mapped.

    Raises RecoveryCodeError if it cannot be a recovery code.
    """
    clean = "".join(code.split()).replace("-", "").upper().translate(_CONFUSABLE)
    if len(clean) != _GROUPS * _GROUP_LEN or any(c not in _ALPHABET for c in clean):
        raise RecoveryCodeError(
            "that is not a recovery code.",
            f"A recovery code has {_GROUPS} groups of {_GROUP_LEN} letters and digits, as shown "
            "at enrollment; type it again.",
        )
    return clean


@dataclass(frozen=True)
class RecoveryWrap:
    """The keys encrypted under a key derived from the recovery code, as stored on disk."""

    salt: bytes
    nonce: bytes
    ciphertext: bytes
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    def to_json(self) -> bytes:
        b64 = base64.b64encode
        doc = {
            "version": 1,
            "kdf": {"name": "scrypt", "n": self.n, "r": self.r, "p": self.p},
            "salt": b64(self.salt).decode(),
            "nonce": b64(self.nonce).decode(),
            "ciphertext": b64(self.ciphertext).decode(),
        }
        return json.dumps(doc, indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RecoveryWrap:
        try:
            doc = json.loads(data)
            b64 = base64.b64decode
            kdf = doc["kdf"]
            return cls(
                salt=b64(doc["salt"]),
                nonce=b64(doc["nonce"]),
                ciphertext=b64(doc["ciphertext"]),
                n=int(kdf["n"]),
                r=int(kdf["r"]),
                p=int(kdf["p"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RecoveryCodeError(
                "the recovery wrap file is damaged.",
                "Restore it from the box's backup; without it the keys cannot be recovered.",
            ) from exc


def _kek(code: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(normalize_code(code).encode())


def wrap_keys(code: str, keys: Mapping[str, bytes]) -> RecoveryWrap:
    """Encrypt ``keys`` (name -> key bytes) under the recovery code."""
    salt, nonce = os.urandom(16), os.urandom(12)
    plain = json.dumps({k: v.hex() for k, v in sorted(keys.items())}).encode()
    ct = AESGCM(_kek(code, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)).encrypt(nonce, plain, _AAD)
    return RecoveryWrap(salt=salt, nonce=nonce, ciphertext=ct)


def unwrap_keys(code: str, wrap: RecoveryWrap) -> dict[str, bytes]:
    """Decrypt the keys; raise RecoveryCodeError if the code is wrong."""
    kek = _kek(code, wrap.salt, wrap.n, wrap.r, wrap.p)
    try:
        plain = AESGCM(kek).decrypt(wrap.nonce, wrap.ciphertext, _AAD)
    except InvalidTag as exc:
        raise RecoveryCodeError(
            "the recovery code is wrong.",
            "Check it against the recovery sheet recorded at enrollment and type it again.",
        ) from exc
    return {k: bytes.fromhex(v) for k, v in json.loads(plain).items()}
