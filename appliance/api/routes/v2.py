"""The KServe v2 REST protocol (open inference protocol), so stock v2 clients work unchanged."""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from appliance.api.deps import (
    ApiServices,
    audit_failed,
    authorise,
    finish_record,
    new_request_id,
    services,
    start_audit,
)
from appliance.api.results import EncodedJson, outputs_json
from appliance.api.tensors import (
    InputError,
    check_outputs,
    decode_inputs,
    encode_outputs,
    requested_outputs,
    split_body,
    v2_type,
)
from appliance.audit.records import AuditRecord
from appliance.errors import ApplianceError
from appliance.identity.roles import Principal
from appliance.inference.registry import ServedModel
from appliance.updates.manifest import TensorSpec

router = APIRouter()
HEADER_LENGTH = "Inference-Header-Content-Length"
ROUTE = "v2-infer"
SUBJECT_MAX = 128  # as the task routes' subject_id
JSON_KINDS = {dict: "object", list: "array", int: "number", float: "number", bool: "boolean"}


def _check(request: Request, entry: str) -> ApiServices:
    svc = services(request)
    authorise(svc, request.headers, entry)
    return svc


@router.get("/v2/health/live")
def live(request: Request) -> dict[str, bool]:
    _check(request, "api:GET /v2/health/live")
    return {"live": True}


@router.get("/v2/health/ready")
def ready(request: Request, response: Response) -> dict[str, bool]:
    svc = _check(request, "api:GET /v2/health/ready")
    ok = bool(svc.registry.names())
    response.status_code = 200 if ok else 503
    return {"ready": ok}


@router.get("/v2")
def server_metadata(request: Request) -> dict[str, Any]:
    svc = _check(request, "api:GET /v2")
    return {"name": svc.server_name, "version": svc.server_version,
            "extensions": ["binary_tensor_data"]}  # fmt: skip


def _spec(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": v2_type(spec), "shape": list(spec.shape)}


def _metadata(model: ServedModel) -> dict[str, Any]:
    m = model.manifest
    return {
        "name": m.name,
        "versions": [str(m.version)],
        "platform": "openvino_ir",
        "inputs": [_spec(s) for s in m.inputs],
        "outputs": [_spec(s) for s in m.outputs],
        "parameters": model.provenance.as_dict(),
    }  # fmt: skip


@router.get("/v2/models/{name}")
@router.get("/v2/models/{name}/versions/{version}")
def model_metadata(request: Request, name: str, version: str | None = None) -> dict[str, Any]:
    svc = _check(request, "api:GET /v2/models/{name}")
    return _metadata(svc.registry.get(name, version))


@router.get("/v2/models/{name}/ready")
@router.get("/v2/models/{name}/versions/{version}/ready")
def model_ready(request: Request, name: str, version: str | None = None) -> dict[str, Any]:
    svc = _check(request, "api:GET /v2/models/{name}/ready")
    svc.registry.get(name, version)
    return {"name": name, "ready": True}


@router.post("/v2/models/{name}/infer")
@router.post("/v2/models/{name}/versions/{version}/infer")
async def infer(request: Request, name: str, version: str | None = None) -> Response:
    body = await request.body()
    svc = services(request)
    job = await run_in_threadpool(_compute, svc, dict(request.headers), name, version, body)
    try:
        # Off the worker thread: waiting for the group commits costs no thread.
        await finish_record(svc, job.who, job.model, job.audited, request_id=job.request_id,
                            route=ROUTE, inputs_sha256=job.inputs_sha256,
                            outputs=job.stored)  # fmt: skip
    except Exception:
        job.finish(svc, "error")
        raise
    job.finish(svc, "ok")
    head = json.dumps(job.response).encode()
    if not job.blobs:
        return Response(head, media_type="application/json",
                        headers={"X-Request-Id": job.request_id})  # fmt: skip
    # Binary tensor data extension: the JSON header, then each binary output's bytes.
    return Response(
        b"".join([head, *job.blobs]), media_type="application/octet-stream",
        headers={"X-Request-Id": job.request_id, HEADER_LENGTH: str(len(head))},
    )  # fmt: skip


@dataclass
class _Job:
    """One inference computed, waiting for its durable write."""

    who: Principal
    model: ServedModel
    request_id: str
    audited: Future[AuditRecord] | None  # the INFERENCE record, queued before the inference
    inputs_sha256: str
    response: dict[str, Any]
    start: float
    blobs: list[bytes]
    stored: EncodedJson  # the outputs as the result store keeps them

    def finish(self, svc: ApiServices, outcome: str) -> None:
        labels = (self.model.manifest.name, self.model.provenance.device)
        svc.metrics.in_flight.dec()
        svc.metrics.latency.labels(*labels).observe(time.perf_counter() - self.start)
        svc.metrics.requests.labels(*labels, outcome).inc()


def _compute(
    svc: ApiServices, headers: dict[str, str], name: str, version: str | None, body: bytes
) -> _Job:
    who = authorise(svc, headers, "api:POST /v2/models/{name}/infer")
    header, binary = split_body(body, headers.get(HEADER_LENGTH.lower()))
    payload = _parse(header)
    model = svc.registry.get(name, version)
    start = time.perf_counter()
    svc.metrics.in_flight.inc()
    request_id = new_request_id()
    audited: Future[AuditRecord] | None = None
    started = False
    try:
        subject = _subject(payload)
        arrays = decode_inputs(model.manifest, payload["inputs"], binary)
        wanted, as_binary, all_binary = requested_outputs(payload)
        check_outputs(wanted, model.output_names)
        # The request is valid: audit the access now, its fsyncs overlapping the inference
        # (the record is durable before the result row is written; see finish_record).
        audited = start_audit(svc, who, model, request_id=request_id, route=ROUTE,
                              subject=subject or None)  # fmt: skip
        started = True
        outputs = model.infer(arrays)
        encoded, blobs = encode_outputs(outputs, wanted, as_binary, all_binary=all_binary)
    except Exception as exc:
        _Job(who, model, "", None, "", {}, start, [], EncodedJson()).finish(svc, "error")
        if started:
            reason = exc.message if isinstance(exc, ApplianceError) else type(exc).__name__
            audit_failed(svc, who, model, audited, request_id=request_id, route=ROUTE,
                         reason=reason)  # fmt: skip
        raise
    response = {
        "model_name": model.manifest.name,
        "model_version": str(model.manifest.version),
        "outputs": encoded,
        "parameters": {**model.provenance.as_dict(), "request_id": request_id},
    }
    if "id" in payload:
        response["id"] = str(payload["id"])
    # The result store keeps binary outputs' bytes as base64 (cheap; a float list is not).
    stored = outputs_json(encoded, blobs)
    # The inputs' digest is the request body's SHA-256: no second serialisation of the tensors.
    return _Job(who, model, request_id, audited, hashlib.sha256(body).hexdigest(), response,
                start, blobs, stored)  # fmt: skip


def _subject(payload: dict[str, Any]) -> str | None:
    """``parameters.subject_id``: what the audit hashes, so a string (as on the task routes)."""
    params = payload.get("parameters")
    subject = params.get("subject_id") if isinstance(params, dict) else None
    if subject is None:
        return None
    if isinstance(subject, str) and len(subject) <= SUBJECT_MAX and _is_unicode(subject):
        return subject
    # The value is not quoted back: it may be PHI.
    if isinstance(subject, str):
        what = f"{len(subject)} characters" if _is_unicode(subject) else "not valid Unicode"
    else:
        what = f"a JSON {JSON_KINDS.get(type(subject), type(subject).__name__)}"
    raise InputError(
        f"parameters.subject_id is {what}; it must be text of at most {SUBJECT_MAX} characters.",
        'Send the patient or encounter id as a string: "parameters": {"subject_id": "..."}.',
    )


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # half a surrogate pair, which JSON can escape
        return False
    return True


def _parse(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(
            f"the body is not JSON: {exc}.", "Send a KServe v2 inference request."
        ) from exc
    except RecursionError:  # the parser recurses per level: [[[[...]]]] exhausts the stack
        raise InputError(
            "the body's JSON is nested too deeply to read.",
            "Send a KServe v2 inference request: tensor data flat or nested to its shape.",
        ) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise InputError(
            "the body has no 'inputs' list.",
            'Send {"inputs": [{"name", "shape", "datatype", "data"}, ...]}.',
        )
    if not all(isinstance(i, dict) for i in payload["inputs"]):
        raise InputError(
            "every entry of 'inputs' must be an object.", "See the KServe v2 protocol."
        )
    outputs = payload.get("outputs")
    if outputs is not None and not (
        isinstance(outputs, list) and all(isinstance(o, dict) for o in outputs)
    ):
        raise InputError(
            "'outputs' must be a list of objects with a 'name'.",
            'Send "outputs": [{"name": "..."}], or leave it out for every output.',
        )
    return payload
