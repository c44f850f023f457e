"""Roles, permissions and the table every entry point checks.

Pure data and one function. Every entry point (CLI command, API route, console screen) names the
permission it needs in :data:`ENTRY_POINTS`; the permission-matrix test walks that table for every
role, so an entry point that forgets to check, or a role that gains a permission by accident,
shows up as a failing row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from appliance.errors import PermissionDeniedError


class Role(StrEnum):
    """What a named account is for."""

    ADMIN = "admin"  # clinic IT: accounts, configuration, acknowledges break-glass
    TECHNICIAN = "technician"  # field technician: provisioning, TPM, updates, diagnosis
    CLINICIAN = "clinician"  # runs inference and reads results (PHI)
    AUDITOR = "auditor"  # reads, verifies and exports the audit trail
    SERVICE = "service"  # PACS or EHR integration: token only, no password
    BREAK_GLASS = "break-glass"  # emergency access to clinical functions, always flagged


class Permission(StrEnum):
    """One thing an entry point does."""

    TRUST_READ = "trust.read"
    TRUST_ENROLL = "trust.enroll"
    TRUST_PLAN = "trust.plan"
    COUNTER_ADVANCE = "counter.advance"
    MODEL_MANAGE = "model.manage"
    MODEL_READ = "model.read"
    AUDIT_READ = "audit.read"
    AUDIT_VERIFY = "audit.verify"
    AUDIT_EXPORT = "audit.export"
    BREAK_GLASS_ACK = "break-glass.ack"
    USER_MANAGE = "user.manage"
    INFER = "infer"
    RESULTS_READ = "results.read"
    UPDATE_INSTALL = "update.install"
    UPDATE_READ = "update.read"
    CONFIG_CHANGE = "config.change"
    HEALTH_READ = "health.read"
    HEALTH_EXPORT = "health.export"  # the signed health report: inventory and PCRs leave the box
    PASSWORD_OWN = "password.own"  # noqa: S105 - a permission: change one's own password


P = Permission
_CLINICAL = frozenset({P.INFER, P.RESULTS_READ, P.HEALTH_READ, P.PASSWORD_OWN})
PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(
        {
            P.TRUST_READ,
            P.TRUST_ENROLL,
            P.TRUST_PLAN,
            P.COUNTER_ADVANCE,
            P.MODEL_MANAGE,
            P.MODEL_READ,
            P.AUDIT_READ,
            P.AUDIT_VERIFY,
            P.AUDIT_EXPORT,
            P.BREAK_GLASS_ACK,
            P.USER_MANAGE,
            P.UPDATE_INSTALL,
            P.UPDATE_READ,
            P.CONFIG_CHANGE,
            P.HEALTH_READ,
            P.HEALTH_EXPORT,
            P.PASSWORD_OWN,
        }
    ),  # fmt: skip
    Role.TECHNICIAN: frozenset(
        {
            P.TRUST_READ,
            P.TRUST_ENROLL,
            P.TRUST_PLAN,
            P.MODEL_MANAGE,
            P.MODEL_READ,
            P.UPDATE_INSTALL,
            P.UPDATE_READ,
            P.HEALTH_READ,
            P.HEALTH_EXPORT,
            P.PASSWORD_OWN,
        }
    ),  # fmt: skip
    Role.CLINICIAN: _CLINICAL,
    Role.AUDITOR: frozenset(
        {P.AUDIT_READ, P.AUDIT_VERIFY, P.AUDIT_EXPORT, P.HEALTH_READ, P.PASSWORD_OWN}
    ),
    Role.SERVICE: frozenset({P.INFER, P.RESULTS_READ, P.HEALTH_READ}),
    Role.BREAK_GLASS: _CLINICAL,
}

# Every entry point that acts for a user, and the permission it needs. API routes and console
# screens join this table as they land.
ENTRY_POINTS: Mapping[str, Permission] = {
    "cli:trust plan-pcr-change": P.TRUST_PLAN,
    "cli:trust counter": P.TRUST_READ,
    "cli:trust counter --advance-to": P.COUNTER_ADVANCE,
    "cli:model verify": P.MODEL_READ,
    "cli:model encrypt": P.MODEL_MANAGE,
    "cli:audit show": P.AUDIT_READ,
    "cli:audit verify": P.AUDIT_VERIFY,
    "cli:audit export": P.AUDIT_EXPORT,
    "cli:audit ack-break-glass": P.BREAK_GLASS_ACK,
    "cli:users list": P.USER_MANAGE,
    "cli:users add": P.USER_MANAGE,
    "cli:users disable": P.USER_MANAGE,
    "cli:users enable": P.USER_MANAGE,
    "cli:users password": P.USER_MANAGE,
    "cli:passwd": P.PASSWORD_OWN,
    "cli:users unlock": P.USER_MANAGE,
    "cli:users token": P.USER_MANAGE,
    "cli:users revoke": P.USER_MANAGE,
    "cli:update install": P.UPDATE_INSTALL,
    "cli:update status": P.UPDATE_READ,
    "cli:update rollback": P.UPDATE_INSTALL,
    "cli:update import-root": P.UPDATE_INSTALL,
    "cli:health report": P.HEALTH_EXPORT,
    "api:GET /v2/health/live": P.HEALTH_READ,
    "api:GET /v2/health/ready": P.HEALTH_READ,
    "api:GET /v2": P.HEALTH_READ,
    "api:GET /v2/models/{name}": P.HEALTH_READ,
    "api:GET /v2/models/{name}/ready": P.HEALTH_READ,
    "api:POST /v2/models/{name}/infer": P.INFER,
    "api:POST /v1/tasks/risk-score": P.INFER,
    "api:POST /v1/tasks/risk-score/news2": P.INFER,
    "api:POST /v1/tasks/notes": P.INFER,
    "api:POST /v1/tasks/studies": P.INFER,
    "api:GET /v1/results/{request_id}": P.RESULTS_READ,
    "api:GET /metrics": P.HEALTH_READ,
    "console:update": P.UPDATE_INSTALL,
    "console:audit": P.AUDIT_READ,
    "console:audit verify": P.AUDIT_VERIFY,
    "console:audit export": P.AUDIT_EXPORT,
    "console:break-glass ack": P.BREAK_GLASS_ACK,
    "console:health report": P.HEALTH_EXPORT,
    "console:accounts": P.USER_MANAGE,
    "console:password": P.PASSWORD_OWN,
    "console:provision": P.TRUST_ENROLL,  # resuming the wizard once the first admin exists
}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    username: str
    role: Role
    session_id: str

    @property
    def break_glass(self) -> bool:
        return self.role is Role.BREAK_GLASS


def may(role: Role, permission: Permission) -> bool:
    """Whether ``role`` grants ``permission``."""
    return permission in PERMISSIONS[role]


def may_enter(role: Role, entry: str) -> bool:
    """Whether ``role`` may use the entry point ``entry`` (a key of ENTRY_POINTS)."""
    return may(role, ENTRY_POINTS[entry])


def require(principal: Principal, permission: Permission, what: str) -> None:
    """Raise PermissionDeniedError unless the principal's role grants ``permission``."""
    if not may(principal.role, permission):
        allowed = sorted(r.value for r in Role if may(r, permission))
        raise PermissionDeniedError(
            f"{principal.username} ({principal.role}) may not {what}.",
            f"Ask a user with one of the roles {', '.join(allowed)}.",
        )
