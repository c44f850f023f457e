"""Task routes: risk scores, notes, studies. Schemas and validation here; the note logic is in
appliance/notes/, the study logic in appliance/dicom/analysis.py and appliance/imaging/ (the same
analyser the DICOM receiver's worker runs), the study body's checks in appliance/api/studies.py."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from appliance.api.deps import (
    ApiServices,
    authorise,
    inputs_digest,
    new_request_id,
    record,
    services,
)
from appliance.api.studies import read_study
from appliance.api.tensors import InputError
from appliance.dicom.analysis import ModelAnalyser
from appliance.errors import ApplianceError
from appliance.identity.roles import Principal
from appliance.imaging.postprocess import peak
from appliance.inference.registry import ModelNotFoundError, ServedModel
from appliance.notes import service as notes_service
from appliance.notes.pipeline import NoteTooLongError
from appliance.updates.manifest import Task

router = APIRouter()


class NoModelForTaskError(ApplianceError):
    """No installed model performs the task."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RiskScoreRequest(Strict):
    subject_id: str | None = Field(None, max_length=128, description="patient or encounter id")
    # Strict: "0.5" and true are no feature values (as NEWS2's '72' is no pulse).
    features: list[list[Annotated[float, Field(strict=True)]]] = Field(
        ..., min_length=1, max_length=10_000
    )
    model: str | None = Field(None, max_length=64, description="which risk model, if several")


class NotesRequest(Strict):
    note_id: str | None = Field(None, max_length=128)
    text: str = Field(..., min_length=1, max_length=1_000_000)


class TaskResult(BaseModel):
    request_id: str
    provenance: dict[str, str]
    result: dict[str, Any]


def _model_for(svc: ApiServices, task: Task, name: str | None = None) -> ServedModel:
    """The served model for ``task`` (the one named ``name``, if given).

    Raises ModelNotFoundError (404) when ``name`` names none of them: the client's mistake;
    NoModelForTaskError (503) when no model for the task is installed: the box's state."""
    able = [m for m in svc.registry.all() if m.manifest.task is task]
    for model in able:
        if name in (None, model.manifest.name):
            return model
    if name and able:
        served = ", ".join(m.manifest.name for m in able)
        raise ModelNotFoundError(
            f"no model named {name!r} performs the task '{task}' here.",
            f"Name one that does ({served}), or leave 'model' out.",
        )
    raise NoModelForTaskError(
        f"no installed model performs the task '{task}'.",
        "Install the vendor's bundle for it (`appliance update install`).",
    )


def _risk(svc: ApiServices, headers: dict[str, str], body: RiskScoreRequest) -> TaskResult:
    who = authorise(svc, headers, "api:POST /v1/tasks/risk-score")
    model = _model_for(svc, Task.RISK_TABULAR, body.model)
    spec = model.manifest.inputs[0]
    width = spec.shape[-1]
    if any(len(row) != width for row in body.features):
        raise InputError(
            f"every row of 'features' must hold {width} numbers for {model.manifest.name}.",
            "Send one row of the model's features per case.",
        )
    features = np.asarray(body.features, dtype=np.float32)
    if not np.isfinite(features).all():
        raise InputError("'features' holds NaN or infinite values.", "Send finite numbers.")
    outputs = model.infer({spec.name: features})
    scores = outputs[model.manifest.outputs[0].name].reshape(len(features), -1)[:, 0]
    result = {"scores": [round(float(s), 6) for s in scores]}
    return _recorded(svc, who, model, "risk-score", body.subject_id, body.features, result)


def _recorded(
    svc: ApiServices, who: Principal, model: ServedModel, route: str, subject: str | None,
    inputs: Any, result: dict[str, Any],
) -> TaskResult:  # fmt: skip
    """Audit and store a task's result (both durable before the answer), then answer it."""
    request_id = new_request_id()
    record(svc, who, model, request_id=request_id, route=route, subject=subject,
           inputs_sha256=inputs_digest(inputs), outputs=result)  # fmt: skip
    return TaskResult(request_id=request_id, provenance=model.provenance.as_dict(), result=result)


@router.post("/v1/tasks/risk-score")
async def risk_score(request: Request, body: RiskScoreRequest) -> TaskResult:
    return await run_in_threadpool(_risk, services(request), dict(request.headers), body)


def _notes(svc: ApiServices, headers: dict[str, str], body: NotesRequest) -> TaskResult:
    """Redact PHI and extract mentions; the note's text is never logged or audited, only hashed."""
    who = authorise(svc, headers, "api:POST /v1/tasks/notes")
    model = _model_for(svc, Task.NOTES_PHI)
    problem = notes_service.misfit(model.manifest)
    if problem:
        raise NoModelForTaskError(problem, "Install a notes bundle built for this box's release.")
    try:
        result = notes_service.pipeline_for(model).process(body.text).as_dict()
    except NoteTooLongError as exc:
        raise InputError(exc.message, exc.hint) from exc
    return _recorded(svc, who, model, "notes", body.note_id, body.text, result)


@router.post("/v1/tasks/notes")
async def notes(request: Request, body: NotesRequest) -> TaskResult:
    return await run_in_threadpool(_notes, services(request), dict(request.headers), body)


def _studies(svc: ApiServices, who: Principal, content_type: str, model_name: str | None,
             body: bytes) -> TaskResult:  # fmt: skip
    """Analyse the study in ``body`` (one or more DICOM instances) with the imaging model."""
    study = read_study(content_type, body, svc.pixel_limits)  # a 4xx before a missing model
    model = _model_for(svc, Task.IMAGING_ANOMALY, model_name)
    findings = ModelAnalyser(svc.registry, model.manifest.name).analyse(study.datasets)
    rows = {str(ds.SOPInstanceUID): (int(ds.Rows), int(ds.Columns)) for ds in study.datasets}
    instances = []
    for sop_uid, finding in findings.slices:
        row, column = peak(np.asarray(finding.heatmap), *rows[sop_uid])
        instances.append({"sop_instance_uid": sop_uid, "score": round(float(finding.score), 6),
                          "peak": {"row": row, "column": column}})  # fmt: skip
    result = {
        "study_instance_uid": study.study_uid,
        "score": round(float(findings.score), 6),
        "worst_sop_instance_uid": findings.worst[0],
        "instances": instances,
    }
    # The study UID is the subject (the audit stores it hashed); the inputs' digest is the body's.
    request_id = new_request_id()
    record(svc, who, model, request_id=request_id, route="studies", subject=study.study_uid,
           inputs_sha256=hashlib.sha256(body).hexdigest(), outputs=result)  # fmt: skip
    return TaskResult(request_id=request_id, provenance=model.provenance.as_dict(), result=result)


@router.post(
    "/v1/tasks/studies",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/dicom": {"schema": {"type": "string", "format": "binary"}},
        "multipart/related": {"schema": {"type": "string", "format": "binary"}},
    }}},
)  # fmt: skip
async def studies(request: Request, model: str | None = Query(None, max_length=64)) -> TaskResult:
    """The images of one study (``application/dicom``, or several as STOW-RS style
    ``multipart/related``) scored by the imaging model: per-image score and hottest point."""
    svc, headers = services(request), dict(request.headers)
    # The caller is checked before a body of up to 64 MiB is read.
    who = await run_in_threadpool(authorise, svc, headers, "api:POST /v1/tasks/studies")
    body = await request.body()
    content_type = headers.get("content-type", "")
    return await run_in_threadpool(_studies, svc, who, content_type, model, body)
