"""The TPM anchor of audit checkpoints: a monotonic NV counter of its own.

Each checkpoint carries the value this counter will have once the checkpoint is acknowledged, so
a log restored to an older state holds an older newest checkpoint than the TPM says. The counter
is separate from the update anti-rollback floor (``counter.py``) but built the same way: no-DA,
written to NV on every increment, never down. Every call opens its own short TPM connection,
since it holds the cross-process TPM lock.
"""

from __future__ import annotations

from appliance.trust.counter import RollbackCounter
from appliance.trust.tpm import Tpm, open_tpm

DEFAULT_AUDIT_ANCHOR_INDEX = 0x01500021


class TpmCheckpointAnchor:
    """The audit anchor at NV ``index`` of the TPM reached through ``tcti``.

    The counter is defined on first use. Both methods raise TrustError when the TPM cannot be
    reached or refuses.
    """

    def __init__(self, tcti: str, index: int = DEFAULT_AUDIT_ANCHOR_INDEX) -> None:
        self.tcti = tcti
        self.index = index
        self._ensured = False

    def _counter(self, tpm: Tpm) -> RollbackCounter:
        counter = RollbackCounter(tpm, self.index, label="audit checkpoint anchor")
        if not self._ensured:
            counter.ensure()
            self._ensured = True
        return counter

    def read(self) -> int:
        """The counter's value (0 before the first checkpoint)."""
        with open_tpm(self.tcti) as tpm:
            return self._counter(tpm).read()

    def advance(self) -> int:
        """Add one to the counter and return the new value."""
        with open_tpm(self.tcti) as tpm:
            counter = self._counter(tpm)
            return counter.advance_to(counter.read() + 1)
