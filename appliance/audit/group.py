"""The audit log behind a group committer: many appends, one fsync (ADR 0006).

:class:`GroupAuditor` is an :class:`~appliance.audit.auditor.Auditor`: ``append`` returns once
the record is durable and named by the signed head, exactly as :meth:`AuditLog.append` does, but
concurrent callers share one lock, one write, one fsync and one head. Other processes (the CLI)
keep appending through their own AuditLog under the same ``flock``.
"""

from __future__ import annotations

from collections.abc import Mapping

from appliance.audit.log import AuditLog
from appliance.audit.records import AuditEvent, AuditRecord, DetailValue, Outcome
from appliance.groupcommit import DEFAULT_MAX_BATCH, GroupCommitter


class GroupAuditor:
    """Appends to ``log`` from a committer thread; ``close`` when done."""

    def __init__(self, log: AuditLog, *, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.log = log
        self.committer = GroupCommitter("audit-commit", log.append_many, max_batch=max_batch)

    def append(
        self,
        event: AuditEvent,
        *,
        actor: str,
        outcome: Outcome,
        role: str | None = None,
        subject: str | None = None,
        model: str | None = None,
        detail: Mapping[str, DetailValue] | None = None,
        flagged: bool = False,
    ) -> AuditRecord:
        """As :meth:`AuditLog.append` (same errors): durable when it returns."""
        draft = self.log.draft(
            event, actor=actor, outcome=outcome, role=role, subject=subject, model=model,
            detail=detail, flagged=flagged,
        )  # fmt: skip
        return self.committer.write(draft)

    async def append_async(
        self,
        event: AuditEvent,
        *,
        actor: str,
        outcome: Outcome,
        role: str | None = None,
        subject: str | None = None,
        model: str | None = None,
        detail: Mapping[str, DetailValue] | None = None,
        flagged: bool = False,
    ) -> AuditRecord:
        """As :meth:`append`, awaited on the event loop instead of blocking a thread."""
        draft = self.log.draft(
            event, actor=actor, outcome=outcome, role=role, subject=subject, model=model,
            detail=detail, flagged=flagged,
        )  # fmt: skip
        return await self.committer.submit_async(draft)

    def close(self) -> None:
        self.committer.close()
