"""The services one appliance process works with, opened from the Config at the entry point.

Mutable runtime state, kept apart from the frozen Config: the TPM endpoint (an embedded swtpm
started if needed), and, once the box is enrolled, the audit log (its key unsealed from the TPM
on first use) and the identity service that writes to it (opening the log at its first record,
so that a token checks without the TPM).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Unpack

from appliance.audit.anchor import DEFAULT_AUDIT_ANCHOR_INDEX, TpmCheckpointAnchor
from appliance.audit.auditor import Auditor
from appliance.audit.log import AuditFields, AuditLog
from appliance.audit.records import AuditEvent, AuditRecord
from appliance.config import Config
from appliance.errors import NotEnrolledError
from appliance.identity.service import IdentityPolicy, IdentityService
from appliance.identity.store import IdentityStore
from appliance.trust import core
from appliance.trust.connection import TpmEndpoint, tpm_endpoint
from appliance.trust.keys import KeyName
from appliance.trust.tpm import open_tpm


@dataclass
class Runtime:
    """What an entry point needs; the audit log and identity open lazily."""

    config: Config
    endpoint: TpmEndpoint
    _audit_key: bytes | None = field(default=None, repr=False)
    _audit: AuditLog | None = field(default=None, repr=False)
    _identity: IdentityService | None = field(default=None, repr=False)
    _store: IdentityStore | None = field(default=None, repr=False)

    @property
    def tcti(self) -> str:
        return self.endpoint.tcti

    @property
    def audit_key(self) -> bytes:
        """The audit key, unsealed once; raises NotEnrolledError or PcrMismatchError."""
        if self._audit_key is None:
            store = core.key_store(self.config)
            if not store.is_enrolled():
                raise NotEnrolledError(
                    "the box is not enrolled, so it has no audit key yet.",
                    "Enroll it first: `appliance trust enroll` (or start `appliance run`).",
                )
            with open_tpm(self.tcti) as tpm:
                self._audit_key = store.unseal(tpm, KeyName.AUDIT)
        return self._audit_key

    @property
    def audit_anchor(self) -> TpmCheckpointAnchor:
        """The TPM counter that anchors audit checkpoints against rollback."""
        return TpmCheckpointAnchor(self.tcti, DEFAULT_AUDIT_ANCHOR_INDEX)

    @property
    def audit(self) -> AuditLog:
        """The audit log (see :attr:`audit_key` for what it raises)."""
        if self._audit is None:
            self._audit = AuditLog(
                self.config.audit_dir,
                self.audit_key,
                self.audit_anchor,
                checkpoint_every=self.config.audit_checkpoint_every,
                retention_days=self.config.audit_retention_days,
            )
        return self._audit

    @property
    def auditor(self) -> Auditor:
        """The audit log for a service that may never write to it (identity, the update agent):
        opened, its key unsealed, at the first append. Checking a token or reading an update's
        state then needs no TPM; recording an event needs it as before."""
        return _AuditOnFirstAppend(self)

    @property
    def identity(self) -> IdentityService:
        if self._identity is None:
            self._store = IdentityStore(self.config.identity_db)
            self._identity = IdentityService(
                self._store, self.auditor, IdentityPolicy.from_config(self.config)
            )
        return self._identity

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


class _AuditOnFirstAppend:
    """:attr:`Runtime.audit`, opened when the first record is appended."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def append(self, event: AuditEvent, **fields: Unpack[AuditFields]) -> AuditRecord:
        return self._runtime.audit.append(event, **fields)


@contextlib.contextmanager
def open_runtime(config: Config) -> Iterator[Runtime]:
    """Open the runtime for ``config``; the embedded swtpm, if started here, stops at the end."""
    with tpm_endpoint(config) as endpoint:
        runtime = Runtime(config, endpoint)
        try:
            yield runtime
        finally:
            runtime.close()
