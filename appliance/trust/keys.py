"""The box's sealed keys: enrollment, unsealing, recovery and planned PCR changes.

Each key (the model-store key, the audit key) is 32 random bytes sealed in the TPM to a PCR policy
and stored as a JSON file in the trust folder. A key file may hold several *sealings* of the same
key: one to the current PCR values and, after :meth:`KeyStore.plan_pcr_change`, one to the values
predicted for after a planned firmware change, so that the box still unseals after the change.

Every file is written atomically. Enrollment writes the recovery wrap first and the key files
after; the recovery code is returned (to be shown once) only after everything is durable.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from appliance.errors import (
    AlreadyEnrolledError,
    NotEnrolledError,
    PcrMismatchError,
    StorageError,
    TrustError,
)
from appliance.fsutil import atomic_write
from appliance.trust import recovery
from appliance.trust.policy import differing_pcrs, normalize_pcrs, pcr_policy_digest
from appliance.trust.tpm import SealedBlob, Tpm
from appliance.trust.tss import PolicyCheckFailedError

log = logging.getLogger(__name__)

KEY_SIZE = 32
RECOVERY_FILE = "recovery.json"
_RECOVER_HINT = (
    "If the firmware or boot configuration was changed on purpose, re-seal the keys with the "
    "recovery code: `appliance trust recover` (or the console's Trust screen). If nobody changed "
    "it, the boot chain may have been tampered with: do not recover, call the vendor's support."
)


class KeyName(StrEnum):
    """The keys the trust core holds."""

    MODEL_STORE = "model-store"
    AUDIT = "audit"


@dataclass(frozen=True)
class Sealing:
    """One TPM sealing of a key, bound to these PCR values."""

    pcr_values: Mapping[int, bytes]
    blob: SealedBlob

    def to_doc(self) -> dict[str, object]:
        b64 = base64.b64encode
        return {
            "pcrs": {str(k): v.hex() for k, v in sorted(self.pcr_values.items())},
            "public": b64(self.blob.public).decode(),
            "private": b64(self.blob.private).decode(),
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, object]) -> Sealing:
        pcrs = doc["pcrs"]
        if not isinstance(pcrs, dict):
            raise TypeError("pcrs")
        return cls(
            pcr_values={int(k): bytes.fromhex(v) for k, v in pcrs.items()},
            blob=SealedBlob(
                public=base64.b64decode(str(doc["public"])),
                private=base64.b64decode(str(doc["private"])),
            ),
        )


@dataclass(frozen=True)
class KeyStatus:
    """What unsealing ``name`` would do now, without doing it."""

    name: KeyName
    sealed_pcrs: tuple[int, ...]
    unsealable: bool
    differing: tuple[int, ...]


class KeyStore:
    """The sealed key files under ``directory``; every TPM call goes through a given Tpm."""

    def __init__(self, directory: Path, pcrs: tuple[int, ...]) -> None:
        self.directory = directory
        self.pcrs = normalize_pcrs(pcrs)

    def _key_file(self, name: KeyName) -> Path:
        return self.directory / f"{name}.sealed.json"

    def is_enrolled(self) -> bool:
        """Whether enrollment finished: every key file and the recovery wrap exist."""
        files = [self._key_file(n) for n in KeyName] + [self.directory / RECOVERY_FILE]
        return all(f.exists() for f in files)

    def enroll(self, tpm: Tpm) -> str:
        """Create the keys, seal them to the current PCRs and wrap them for recovery.

        Returns the recovery code, which is stored nowhere: show it once.
        Raises AlreadyEnrolledError if the box is enrolled.
        """
        if self.is_enrolled():
            raise AlreadyEnrolledError(
                f"this box is already enrolled (keys in {self.directory}).",
                "To re-seal after a PCR change use `appliance trust recover`.",
            )
        keys = {name: os.urandom(KEY_SIZE) for name in KeyName}
        code = recovery.generate_code()
        wrap = recovery.wrap_keys(code, {str(k): v for k, v in keys.items()})
        atomic_write(self.directory / RECOVERY_FILE, wrap.to_json())
        self._seal_all(tpm, keys, tpm.pcr_read(self.pcrs))
        log.info("trust: enrolled keys %s sealed to PCRs %s", ", ".join(keys), self.pcrs)
        return code

    def new_recovery_code(self, tpm: Tpm) -> str:
        """Wrap the sealed keys under a fresh recovery code (the old code stops working) and
        return it to show once: for a code that was shown but never confirmed as written down,
        e.g. when the power failed in between. Raises PcrMismatchError if the keys do not unseal.
        """
        keys = self.unseal_all(tpm)
        code = recovery.generate_code()
        wrap = recovery.wrap_keys(code, {str(k): v for k, v in keys.items()})
        atomic_write(self.directory / RECOVERY_FILE, wrap.to_json())
        log.info("trust: a new recovery code replaces the unconfirmed one")
        return code

    def _seal_all(
        self, tpm: Tpm, keys: Mapping[KeyName, bytes], *value_sets: Mapping[int, bytes]
    ) -> None:
        for name, key in keys.items():
            sealings = [Sealing(v, tpm.seal(key, pcr_policy_digest(v))) for v in value_sets]
            self._write(name, sealings)

    def _write(self, name: KeyName, sealings: list[Sealing]) -> None:
        doc = {
            "version": 1,
            "name": str(name),
            "pcr_bank": "sha256",
            "sealings": [s.to_doc() for s in sealings],
        }
        atomic_write(self._key_file(name), json.dumps(doc, indent=2).encode())

    def _read(self, name: KeyName) -> list[Sealing]:
        path = self._key_file(name)
        try:
            doc = json.loads(path.read_bytes())
            return [Sealing.from_doc(s) for s in doc["sealings"]]
        except FileNotFoundError as exc:
            raise NotEnrolledError(
                f"the {name} key is not enrolled ({path} is missing).",
                "Enroll the box first: `appliance trust enroll` (or the console's wizard).",
            ) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(
                f"the sealed key file {path} is damaged.",
                "Re-seal the keys with the recovery code: `appliance trust recover`.",
            ) from exc

    def status(self, tpm: Tpm) -> list[KeyStatus]:
        """For each key, whether the current PCRs match one of its sealings."""
        out = []
        for name in KeyName:
            sealings = self._read(name)
            current = tpm.pcr_read(sorted({p for s in sealings for p in s.pcr_values}))
            diffs = [differing_pcrs(s.pcr_values, current) for s in sealings]
            best = min(diffs, key=len)
            out.append(KeyStatus(name, tuple(sorted(sealings[0].pcr_values)), not best, best))
        return out

    def unseal(self, tpm: Tpm, name: KeyName) -> bytes:
        """The key's bytes, released by the TPM if the PCRs match one of its sealings.

        Raises PcrMismatchError naming the PCRs that differ from the sealed values.
        """
        sealings = self._read(name)
        current = tpm.pcr_read(sorted({p for s in sealings for p in s.pcr_values}))
        for sealing in sealings:
            if differing_pcrs(sealing.pcr_values, current):
                continue
            try:
                return tpm.unseal(sealing.blob, list(sealing.pcr_values))
            except PolicyCheckFailedError:
                log.warning("trust: %s sealing refused although its PCRs match", name)
        diffs = differing_pcrs(sealings[0].pcr_values, current)
        if not diffs:
            raise PcrMismatchError(
                f"the TPM refused to unseal the {name} key although PCRs "
                f"{_fmt(sealings[0].pcr_values)} hold the sealed values.",
                "The key file may have been replaced. " + _RECOVER_HINT,
                differing=(),
            )
        sealed = sealings[0].pcr_values
        detail = "; ".join(
            f"PCR {p} is {current[p].hex()[:16]}…, sealed to {sealed[p].hex()[:16]}…" for p in diffs
        )
        raise PcrMismatchError(
            f"cannot unseal the {name} key: PCR {', '.join(map(str, diffs))} changed since "
            f"the keys were sealed ({detail}).",
            _RECOVER_HINT,
            differing=diffs,
        )

    def unseal_all(self, tpm: Tpm) -> dict[KeyName, bytes]:
        """Every key, unsealed (see :meth:`unseal`)."""
        return {name: self.unseal(tpm, name) for name in KeyName}

    def recover(self, tpm: Tpm, code: str, predicted: Mapping[int, bytes] | None = None) -> None:
        """Re-seal every key to the current PCRs (overridden by ``predicted``), using the code.

        Raises RecoveryCodeError if the code is wrong; nothing is changed then.
        """
        wrap = recovery.RecoveryWrap.from_json(self._read_recovery())
        keys = {KeyName(k): v for k, v in recovery.unwrap_keys(code, wrap).items()}
        values = {**tpm.pcr_read(self.pcrs), **(predicted or {})}
        self._seal_all(tpm, keys, values)
        log.info("trust: keys re-sealed with the recovery code to PCRs %s", _fmt(values))

    def plan_pcr_change(self, tpm: Tpm, predicted: Mapping[int, bytes]) -> None:
        """Add a sealing to the predicted PCR values, keeping the one for the current values.

        For a planned firmware change: before it, the current sealing unseals; after it, the
        predicted one does. Raises PcrMismatchError if the keys do not unseal now.
        """
        extra = set(predicted) - set(self.pcrs)
        if extra:
            raise TrustError(
                f"PCR {min(extra)} is not in the sealed PCR set {self.pcrs}.",
                "Predict values only for the PCRs the keys are sealed to.",
            )
        keys = self.unseal_all(tpm)
        current = tpm.pcr_read(self.pcrs)
        self._seal_all(tpm, keys, current, {**current, **predicted})
        log.info("trust: keys also sealed to predicted PCRs %s", _fmt(predicted))

    def _read_recovery(self) -> bytes:
        path = self.directory / RECOVERY_FILE
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise NotEnrolledError(
                f"there is no recovery wrap ({path}).", "Enroll the box first."
            ) from exc


def _fmt(values: Mapping[int, bytes]) -> str:
    return ", ".join(f"{p}={v.hex()[:8]}…" for p, v in sorted(values.items()))
