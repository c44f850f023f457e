"""The audit log behind a group committer: many appends, one fsync (ADR 0009).

:class:`GroupAuditor` is an :class:`~appliance.audit.auditor.Auditor`: ``append`` returns once
the record is durable and named by the signed head, exactly as :meth:`AuditLog.append` does, but
concurrent callers share one lock, one write, one fsync and one head. Other processes (the CLI)
keep appending through their own AuditLog under the same ``flock``.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Unpack

from appliance.audit.log import AuditFields, AuditLog
from appliance.audit.records import AuditEvent, AuditRecord
from appliance.groupcommit import DEFAULT_MAX_BATCH, GroupCommitter


class GroupAuditor:
    """Appends to ``log`` from a committer thread; ``close`` when done."""

    def __init__(self, log: AuditLog, *, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.log = log
        self.committer = GroupCommitter("audit-commit", log.append_many, max_batch=max_batch)

    def append(self, event: AuditEvent, **fields: Unpack[AuditFields]) -> AuditRecord:
        """As :meth:`AuditLog.append` (same errors): durable when it returns."""
        return self.committer.write(self.log.draft(event, **fields))

    def submit(self, event: AuditEvent, **fields: Unpack[AuditFields]) -> Future[AuditRecord]:
        """Queue the record and return at once; the future completes when it is durable (or
        raises what :meth:`append` would). Lets a caller overlap the fsync with other work."""
        return self.committer.submit(self.log.draft(event, **fields))

    async def append_async(self, event: AuditEvent, **fields: Unpack[AuditFields]) -> AuditRecord:
        """As :meth:`append`, awaited on the event loop instead of blocking a thread."""
        return await self.committer.submit_async(self.log.draft(event, **fields))

    def close(self) -> None:
        self.committer.close()
