"""What routes share: the services, authentication, permission checks, audit and results."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from appliance.api.metrics import Metrics
from appliance.api.results import ResultStore
from appliance.audit.auditor import Auditor
from appliance.audit.group import GroupAuditor
from appliance.audit.records import AuditEvent, AuditRecord, Outcome
from appliance.dicom.checks import DEFAULT_LIMITS, PixelLimits
from appliance.errors import PermissionDeniedError, SessionExpiredError
from appliance.identity.roles import ENTRY_POINTS, Permission, Principal, may
from appliance.identity.service import IdentityService
from appliance.inference.registry import ModelRegistry, ServedModel


@dataclass
class ApiServices:
    """Everything the routes use, built once by the caller of create_app."""

    registry: ModelRegistry
    results: ResultStore
    identity: IdentityService
    audit: Auditor
    metrics: Metrics
    server_name: str = "appliance"
    server_version: str = "0"
    pixel_limits: PixelLimits = DEFAULT_LIMITS  # the site's (build_services: its Config)


def services(request: Request) -> ApiServices:
    svc: ApiServices = request.app.state.services
    return svc


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token of the request's ``Authorization: Bearer`` header; raises SessionExpiredError
    when there is none."""
    auth = headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise SessionExpiredError(
            "this request carries no bearer token.",
            "Send 'Authorization: Bearer <token>' (a service token from `appliance users "
            "token`, or a session from `appliance login`).",
        )
    return token


def authorise(svc: ApiServices, headers: Mapping[str, str], entry: str) -> Principal:
    """Authenticate the bearer token and check the entry point's permission (denials audited).

    The request gate (gate.py) has already refused a request whose token could never pass, before
    its body was read; the token is authenticated again here (a cached lookup) so that one
    revoked while the body arrived is still refused."""
    principal = svc.identity.authenticate(bearer_token(headers))
    permission: Permission = ENTRY_POINTS[entry]
    if not may(principal.role, permission):
        svc.identity.record_denial(principal, entry, permission)
        raise PermissionDeniedError(
            f"{principal.username} ({principal.role}) may not call {entry.removeprefix('api:')}.",
            f"It needs the permission {permission}; ask an admin.",
        )
    return principal


def new_request_id() -> str:
    return uuid.uuid4().hex


def inputs_digest(payload: Any) -> str:
    """A digest of the request's inputs: lets a result be matched to its inputs without PHI."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def record(
    svc: ApiServices, who: Principal, model: ServedModel, *, request_id: str, route: str,
    subject: str | None, inputs_sha256: str, outputs: Any,
) -> None:  # fmt: skip
    """Audit the PHI request, then store the result durably: both before the answer leaves."""
    record_result(svc, who, f"{model.manifest.name} {model.manifest.version}",
                  model.provenance.as_dict(), request_id=request_id, route=route, subject=subject,
                  inputs_sha256=inputs_sha256, outputs=outputs)  # fmt: skip


def record_result(
    svc: ApiServices, who: Principal, model: str, provenance: Mapping[str, str], *,
    request_id: str, route: str, subject: str | None, inputs_sha256: str, outputs: Any,
) -> None:  # fmt: skip
    """:func:`record` for any scorer, served model or built-in (NEWS2): ``model`` names it."""
    _audit_inference(svc, who, model, request_id, route, subject)
    svc.results.put_grouped(
        request_id, actor=who.username, route=route, provenance=provenance,
        inputs_sha256=inputs_sha256, outputs=outputs,
    )  # fmt: skip


def _audit_inference(
    svc: ApiServices, who: Principal, model: str, request_id: str, route: str,
    subject: str | None,
) -> None:  # fmt: skip
    svc.audit.append(
        AuditEvent.INFERENCE, actor=who.username, role=who.role.value, outcome=Outcome.SUCCESS,
        subject=subject, model=model,
        detail={"request_id": request_id, "route": route}, flagged=who.break_glass,
    )  # fmt: skip


def start_audit(
    svc: ApiServices, who: Principal, model: ServedModel, *, request_id: str, route: str,
    subject: str | None,
) -> Future[AuditRecord] | None:  # fmt: skip
    """Queue the request's INFERENCE record for the group commit (ADR 0009) and return its
    future, so that its fsyncs overlap the inference; None when there is no group committer
    (the record is then appended, durable, before this returns)."""
    name = f"{model.manifest.name} {model.manifest.version}"
    if isinstance(svc.audit, GroupAuditor):
        return svc.audit.submit(
            AuditEvent.INFERENCE, actor=who.username, role=who.role.value,
            outcome=Outcome.SUCCESS, subject=subject, model=name,
            detail={"request_id": request_id, "route": route}, flagged=who.break_glass,
        )  # fmt: skip
    _audit_inference(svc, who, name, request_id, route, subject)
    return None


def audit_failed(
    svc: ApiServices, who: Principal, model: ServedModel, audited: Future[AuditRecord] | None,
    *, request_id: str, route: str, reason: str,
) -> None:  # fmt: skip
    """After :func:`start_audit`, the inference failed: the trail says so (same request id)."""
    if audited is not None:
        audited.result()  # the access record first, then its failure
    svc.audit.append(
        AuditEvent.INFERENCE, actor=who.username, role=who.role.value, outcome=Outcome.FAILURE,
        model=f"{model.manifest.name} {model.manifest.version}",
        detail={"request_id": request_id, "route": route, "reason": reason[:200]},
        flagged=who.break_glass,
    )  # fmt: skip


async def finish_record(
    svc: ApiServices, who: Principal, model: ServedModel, audited: Future[AuditRecord] | None,
    *, request_id: str, route: str, inputs_sha256: str, outputs: Any,
) -> None:  # fmt: skip
    """Wait for the audit record of :func:`start_audit` to be durable, then commit the result
    (group-committed): both are on disk, audit first, before this returns; the event loop
    never blocks."""
    if audited is not None:
        await asyncio.wrap_future(audited)
    await svc.results.put_async(
        request_id, actor=who.username, route=route, provenance=model.provenance.as_dict(),
        inputs_sha256=inputs_sha256, outputs=outputs,
    )  # fmt: skip
