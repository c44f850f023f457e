"""``POST /v1/tasks/risk-score/news2``: NEWS2 from vital signs, next to the learned risk scores.

NEWS2 is a published chart, not a model: it needs no bundle and runs in the API process
(appliance/risk/news2.py). Its results are audited and stored durably like any model's, with
provenance ``NEWS2 (RCP 2017)``; the digest in the provenance is that of the scoring code, so a
stored result names exactly the chart implementation that produced it.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ConfigDict, Field

from appliance.api.deps import (
    ApiServices,
    authorise,
    inputs_digest,
    new_request_id,
    record_result,
    services,
)
from appliance.api.routes.tasks import Strict, TaskResult
from appliance.api.tensors import InputError
from appliance.inference.registry import Provenance
from appliance.risk import news2

router = APIRouter()
ENTRY = "api:POST /v1/tasks/risk-score/news2"
ROUTE = "risk-score/news2"


class Observation(Strict):
    """One set of vital signs; every field is needed, but a missing one is reported by name (with
    every other missing one) by the chart's own check rather than by the schema."""

    model_config = ConfigDict(extra="forbid", strict=True)  # 'true' is no number, '72' no pulse

    respiration_rate: float | None = Field(None, description="breaths per minute")
    spo2: float | None = Field(None, description="oxygen saturation, %")
    spo2_scale: int | None = Field(
        None, description="1 (default) or 2: only for prescribed hypercapnic respiratory failure"
    )
    on_oxygen: bool | None = Field(None, description="true when on supplemental oxygen")
    systolic_bp: float | None = Field(None, description="systolic blood pressure, mmHg")
    pulse: float | None = Field(None, description="beats per minute")
    consciousness: str | None = Field(
        None, description="alert, new-confusion, voice, pain or unresponsive"
    )
    temperature: float | None = Field(None, description="degrees Celsius")


class News2Request(Strict):
    subject_id: str | None = Field(None, max_length=128, description="patient or encounter id")
    observations: list[Observation] = Field(..., min_length=1, max_length=10_000)


@functools.cache
def provenance() -> dict[str, str]:
    """The provenance every NEWS2 result carries (the scoring module's digest as its bundle's)."""
    code = Path(news2.__file__).read_bytes()
    return Provenance(
        model_name=news2.PROVENANCE, model_version="2017", bundle_sha256=hashlib.sha256(code)
        .hexdigest(), device="CPU", openvino_version="none (a chart, not a model)",
        slot="built-in",
    ).as_dict()  # fmt: skip


def _news2(svc: ApiServices, headers: dict[str, str], body: News2Request) -> TaskResult:
    who = authorise(svc, headers, ENTRY)
    docs = [o.model_dump(exclude_none=True) for o in body.observations]
    try:
        scores = news2.score_all(docs)
    except news2.VitalSignsError as exc:
        raise InputError(exc.message, exc.hint) from None
    result = {"scores": [s.as_dict() for s in scores]}
    request_id = new_request_id()
    record_result(svc, who, news2.PROVENANCE, provenance(), request_id=request_id, route=ROUTE,
                  subject=body.subject_id, inputs_sha256=inputs_digest(docs),
                  outputs=result)  # fmt: skip
    return TaskResult(request_id=request_id, provenance=provenance(), result=result)


@router.post("/v1/tasks/risk-score/news2")
async def news2_score(request: Request, body: News2Request) -> TaskResult:
    """NEWS2, its risk band and the RCP's clinical response for each set of observations."""
    return await run_in_threadpool(_news2, services(request), dict(request.headers), body)
