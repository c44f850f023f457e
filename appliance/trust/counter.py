"""The anti-rollback floor: a monotonic NV counter in the TPM.

The update channel refuses any bundle whose version epoch is below the counter and advances the
counter when it commits a newer one. The counter is a TPM NV index of type *counter*: it can only
go up, survives power cuts (it is not ``orderly``, so every increment is written to NV at once),
and is ``noDA``. Before its first increment the TPM reports it as unwritten; that reads as 0.
"""

from __future__ import annotations

import logging

from appliance.errors import CounterError
from appliance.trust.tpm import Tpm, open_tpm

log = logging.getLogger(__name__)

# Each increment is an NV write; refuse jumps that would wear a real TPM's NV for nothing.
MAX_ADVANCE = 4096


class RollbackCounter:
    """The counter at NV ``index`` of ``tpm``."""

    def __init__(self, tpm: Tpm, index: int, label: str = "anti-rollback floor") -> None:
        self._tpm = tpm
        self.index = index
        self.label = label

    def exists(self) -> bool:
        return self._tpm.nv_counter_exists(self.index)

    def ensure(self) -> None:
        """Define the counter if this TPM does not have it yet (idempotent)."""
        if not self.exists():
            self._tpm.nv_counter_define(self.index)
            log.info("trust: anti-rollback counter defined at NV %#x", self.index)

    def read(self) -> int:
        """The floor: the counter's value, 0 before its first increment.

        Raises CounterError if the counter is not defined on this TPM.
        """
        if not self.exists():
            raise CounterError(
                f"the anti-rollback counter (NV {self.index:#x}) is not defined on this TPM.",
                "Enroll the box (`appliance trust enroll`); if it was enrolled, the TPM was "
                "cleared or replaced: call the vendor's support.",
            )
        value = self._tpm.nv_counter_read(self.index)
        return 0 if value is None else value

    def advance_to(self, target: int) -> int:
        """Raise the counter to ``target`` and return the new value.

        A target equal to the current value does nothing. Raises CounterError for a target below
        the current value (the floor never goes down) or too far above it.
        """
        current = self.read()
        if target < current:
            raise CounterError(
                f"the anti-rollback floor is {current}; it cannot go back to {target}.",
                "Install a bundle whose version epoch is at least the floor.",
            )
        if target - current > MAX_ADVANCE:
            raise CounterError(
                f"advancing the anti-rollback floor from {current} to {target} takes more than "
                f"{MAX_ADVANCE} steps.",
                "Check the bundle's version epoch; vendors raise it one step per release.",
            )
        while current < target:
            self._tpm.nv_counter_increment(self.index)
            current = self.read()
        log.info("trust: %s is now %d", self.label, current)
        return current


class TpmCounter:
    """A :class:`RollbackCounter` reached through one short TPM connection per call.

    For long-running callers (the update agent) that must not hold the TPM between steps.
    """

    def __init__(self, tcti: str, index: int, label: str = "anti-rollback floor") -> None:
        self.tcti = tcti
        self.index = index
        self.label = label

    def read(self) -> int:
        with open_tpm(self.tcti) as tpm:
            return RollbackCounter(tpm, self.index, self.label).read()

    def advance_to(self, target: int) -> int:
        with open_tpm(self.tcti) as tpm:
            return RollbackCounter(tpm, self.index, self.label).advance_to(target)
