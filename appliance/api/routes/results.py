"""Results by request id, and the metrics endpoint."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from appliance.api.deps import ApiServices, authorise, services
from appliance.audit.records import AuditEvent, Outcome

router = APIRouter()


def _result(svc: ApiServices, headers: dict[str, str], request_id: str) -> dict[str, Any]:
    who = authorise(svc, headers, "api:GET /v1/results/{request_id}")
    stored = svc.results.get(request_id)
    svc.audit.append(
        AuditEvent.PHI_READ, actor=who.username, role=who.role.value, outcome=Outcome.SUCCESS,
        detail={"request_id": request_id}, flagged=who.break_glass,
    )  # fmt: skip
    return stored.as_dict()


@router.get("/v1/results/{request_id}")
async def result(request: Request, request_id: str) -> dict[str, Any]:
    return await run_in_threadpool(_result, services(request), dict(request.headers), request_id)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    svc = services(request)
    authorise(svc, request.headers, "api:GET /metrics")
    return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4")
