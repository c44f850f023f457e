"""What the rest of the appliance needs of the audit log: one method. AuditLog provides it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from appliance.audit.records import AuditEvent, Outcome


class Auditor(Protocol):
    """Appends one security event, durably, before the caller acknowledges its action."""

    def append(
        self,
        event: AuditEvent,
        *,
        actor: str,
        outcome: Outcome,
        role: str | None = None,
        subject: str | None = None,
        model: str | None = None,
        detail: Mapping[str, str | int | bool] | None = None,
        flagged: bool = False,
    ) -> object: ...
