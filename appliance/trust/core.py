"""The trust core's operations as the rest of the appliance calls them.

Small functions over an open :class:`~appliance.trust.tpm.Tpm` and the Config: enroll the box,
bring the trust core up (check lockout, unseal every key, read the floor) and report its state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from appliance.config import Config
from appliance.trust.counter import RollbackCounter
from appliance.trust.keys import KeyName, KeyStatus, KeyStore
from appliance.trust.tpm import LockoutStatus, Tpm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrustState:
    """What ``appliance trust status`` shows and ``appliance run`` reports."""

    lockout: LockoutStatus
    enrolled: bool
    keys: tuple[KeyStatus, ...]
    floor: int | None


def key_store(config: Config) -> KeyStore:
    return KeyStore(config.trust_dir, config.pcrs)


def enroll(tpm: Tpm, config: Config) -> str:
    """Seal fresh keys, define the anti-rollback counter; return the recovery code to show once."""
    code = key_store(config).enroll(tpm)
    RollbackCounter(tpm, config.counter_index).ensure()
    return code


def lockout_warning(status: LockoutStatus) -> str | None:
    """A sentence for the log when the TPM is locked out or close to it, else None."""
    if status.in_lockout:
        return (
            f"the TPM is in dictionary-attack lockout ({status.failed_tries} of "
            f"{status.max_tries} failures); the appliance's own keys are no-DA and still work, "
            f"but other TPM users are refused for up to {status.lockout_recovery_s} s. Clear it "
            "with the lockout authorization (`tpm2_dictionarylockout --clear-lockout`)."
        )
    if status.failed_tries:
        return (
            f"the TPM has counted {status.failed_tries} of {status.max_tries} authorization "
            "failures or unclean shutdowns."
        )
    return None


def bring_up(tpm: Tpm, config: Config) -> dict[KeyName, bytes]:
    """Check the TPM and unseal every key; raises PcrMismatchError and friends on failure."""
    warning = lockout_warning(tpm.lockout_status())
    if warning:
        log.warning("trust: %s", warning)
    keys = key_store(config).unseal_all(tpm)
    RollbackCounter(tpm, config.counter_index).read()
    return keys


def state(tpm: Tpm, config: Config) -> TrustState:
    """The trust core's state, without unsealing anything."""
    store = key_store(config)
    enrolled = store.is_enrolled()
    counter = RollbackCounter(tpm, config.counter_index)
    return TrustState(
        lockout=tpm.lockout_status(),
        enrolled=enrolled,
        keys=tuple(store.status(tpm)) if enrolled else (),
        floor=counter.read() if counter.exists() else None,
    )
