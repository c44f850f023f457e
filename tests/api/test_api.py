"""The API on real uvicorn over TLS: a stock KServe v2 client, durable results, provenance,
clear 4xx for bad input, auth and audit, hot swap without a failed request."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton

from appliance.audit.records import AuditEvent, hash_subject
from appliance.identity.roles import Role
from appliance.inference.errors import InferenceError
from appliance.inference.registry import ServedModel

from .conftest import Served, expected_risk

FEATURES = np.random.default_rng(3).normal(size=(5, 8)).astype(np.float32)


def v2_body(data: np.ndarray, **extra: object) -> dict[str, object]:
    inputs = [{"name": "features", "shape": list(data.shape), "datatype": "FP32",
               "data": data.reshape(-1).tolist()}]  # fmt: skip
    return {"inputs": inputs, **extra}


def test_a_stock_kserve_v2_client_gets_correct_outputs(served: Served) -> None:
    assert served.api.tls is not None
    ctx = ssl.create_default_context(cafile=str(served.api.tls.cert))
    client = triton.InferenceServerClient(
        f"127.0.0.1:{served.api.port}", ssl=True, ssl_context_factory=lambda: ctx
    )
    headers = {"Authorization": f"Bearer {served.tokens[Role.SERVICE]}"}
    assert client.is_server_live(headers=headers)
    assert client.is_server_ready(headers=headers)
    assert client.is_model_ready("risk-demo", headers=headers)
    meta = client.get_model_metadata("risk-demo", headers=headers)
    assert meta["inputs"][0] == {"name": "features", "datatype": "FP32", "shape": [-1, 8]}
    tensor = triton.InferInput("features", list(FEATURES.shape), "FP32")
    tensor.set_data_from_numpy(FEATURES, binary_data=False)
    wanted = [triton.InferRequestedOutput("risk", binary_data=False)]
    result = client.infer("risk-demo", [tensor], outputs=wanted, headers=headers)
    np.testing.assert_allclose(
        result.as_numpy("risk").reshape(-1), expected_risk(FEATURES), rtol=1e-5
    )
    client.close()


def test_a_stock_client_with_its_defaults_uses_binary_tensors(served: Served) -> None:
    """tritonclient sends inputs as binary tensor data and asks for binary outputs by default
    (KServe v2's binary tensor data extension); the box answers in kind and keeps the bytes."""
    assert served.api.tls is not None
    ctx = ssl.create_default_context(cafile=str(served.api.tls.cert))
    client = triton.InferenceServerClient(
        f"127.0.0.1:{served.api.port}", ssl=True, ssl_context_factory=lambda: ctx
    )
    headers = {"Authorization": f"Bearer {served.tokens[Role.SERVICE]}"}
    assert "binary_tensor_data" in client.get_server_metadata(headers=headers)["extensions"]
    tensor = triton.InferInput("features", list(FEATURES.shape), "FP32")
    tensor.set_data_from_numpy(FEATURES)  # binary_data=True
    for outputs in (None, [triton.InferRequestedOutput("risk")]):
        result = client.infer("risk-demo", [tensor], outputs=outputs, headers=headers)
        risk = result.as_numpy("risk")
        np.testing.assert_allclose(risk.reshape(-1), expected_risk(FEATURES), rtol=1e-5)
        output = result.get_output("risk")
        assert output["parameters"]["binary_data_size"] == risk.nbytes
    client.close()
    request_id = result.get_response()["parameters"]["request_id"]
    with served.client() as http:
        stored = http.get(f"/v1/results/{request_id}").json()["outputs"][0]
    kept = np.frombuffer(base64.b64decode(stored["data_base64"]), "<f4").reshape(stored["shape"])
    np.testing.assert_array_equal(kept, risk)


def _binary_request(header: dict[str, object], blob: bytes, length: str | bytes | None = None
                    ) -> tuple[bytes, dict[str, str | bytes]]:  # fmt: skip
    head = json.dumps(header).encode()
    hdrs: dict[str, str | bytes] = {"Inference-Header-Content-Length": length or str(len(head)),
            "Content-Type": "application/octet-stream"}  # fmt: skip
    return head + blob, hdrs


def _binary_input(size: int, shape: list[int] | None = None) -> dict[str, object]:
    return {"inputs": [{"name": "features", "shape": shape or list(FEATURES.shape),
                        "datatype": "FP32", "parameters": {"binary_data_size": size}}]}  # fmt: skip


BLOB = FEATURES.astype("<f4").tobytes()
BAD_BINARY = {
    "header longer than the body": (_binary_input(len(BLOB)), BLOB, "999999",
                                    "Inference-Header-Content-Length"),
    "header length not a number": (_binary_input(len(BLOB)), BLOB, "ten", "Inference-Header"),
    # int() refuses a string of more than 4300 digits, and str.isdigit() passes a superscript
    # two (a Latin-1 header byte) that int() refuses: both were a 500.
    "header length of 5000 digits": (_binary_input(len(BLOB)), BLOB, "9" * 5000,
                                     "Inference-Header-Content-Length"),
    "header length a superscript": (_binary_input(len(BLOB)), BLOB, b"\xb2",
                                    "Inference-Header-Content-Length"),
    "fewer bytes than claimed": (_binary_input(len(BLOB)), BLOB[:-4], None, "only"),
    "bytes no input claims": (_binary_input(len(BLOB)), BLOB + b"1234", None, "no input claims"),
    "size does not fit the shape": (_binary_input(len(BLOB) - 4), BLOB[:-4], None, "needs"),
    "negative size": (_binary_input(-1), b"", None, "binary_data_size"),
    "data and binary": ({"inputs": [{**_binary_input(len(BLOB))["inputs"][0],  # type: ignore[index]
                                     "data": [1]}]}, BLOB, None, "both"),
    "NaN in binary": (_binary_input(len(BLOB)), np.full(40, np.nan, "<f4").tobytes(), None, "NaN"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_BINARY))
def test_bad_binary_tensor_data_is_a_400_saying_what(served: Served, case: str) -> None:
    header, blob, length, words = BAD_BINARY[case]
    body, headers = _binary_request(header, blob, length)
    with served.client() as http:
        answer = http.post("/v2/models/risk-demo/infer", content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert words in answer.json()["error"], answer.json()


def test_every_result_carries_provenance_and_can_be_fetched_again(served: Served) -> None:
    with served.client() as http:
        answer = http.post("/v2/models/risk-demo/infer", json=v2_body(FEATURES, id="c-1"))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        params = body["parameters"]
        assert {params["model_name"], params["model_version"], params["device"]} == {
            "risk-demo", "1.0.0", "CPU"}  # fmt: skip
        assert len(params["bundle_sha256"]) == 64 and params["openvino_version"]
        assert body["id"] == "c-1"
        stored = http.get(f"/v1/results/{answer.headers['X-Request-Id']}")
        assert stored.status_code == 200, stored.text
        assert stored.json()["outputs"] == body["outputs"]
        assert stored.json()["provenance"]["bundle_sha256"] == params["bundle_sha256"]
        missing = http.get("/v1/results/nope")
        assert missing.status_code == 404 and "X-Request-Id" in missing.json()["hint"]


def test_risk_score_task(served: Served) -> None:
    with served.client(Role.CLINICIAN) as http:
        body = {"subject_id": "MRN-77", "features": FEATURES.tolist()}
        answer = http.post("/v1/tasks/risk-score", json=body)
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(
            answer.json()["result"]["scores"], expected_risk(FEATURES), atol=1e-5
        )
        pending = http.post("/v1/tasks/notes", json={"text": "Pt seen today."})
        assert pending.status_code == 503 and "notes-phi" in pending.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not JSON"),
        (json.dumps({"nope": 1}).encode(), 400, "no 'inputs' list"),
        (json.dumps(v2_body(FEATURES[:, :7])).encode(), 400, "has shape [5, 7]"),
        (json.dumps({"inputs": [{"name": "features", "shape": [1, 8], "datatype": "INT64",
                                 "data": [1] * 8}]}).encode(), 400, "datatype 'INT64'"),
        (json.dumps({"inputs": [{"name": "features", "shape": [2, 8], "datatype": "FP32",
                                 "data": [1.0] * 8}]}).encode(), 400, "has 8 values"),
        (json.dumps({"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP32",
                                 "data": [1.0] * 8}]}).encode(), 400, "takes ['features']"),
        (json.dumps({"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32",
                                 "data": ["a"] * 8}]}).encode(), 400, "not a list of FP32"),
        (json.dumps({"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32",
                                 "data": ["1.5"] * 8}]}).encode(), 400, "it holds strings"),
        (json.dumps({"inputs": [{"name": "features", "shape": [1, 8], "datatype": "FP32",
                                 "data": [True] * 8}]}).encode(), 400, "it holds booleans"),
        (b"x" * (65 << 20), 413, "at most"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "nested"),
        (json.dumps({"inputs": [{"name": "features", "shape": [1 << 40, 8], "datatype": "FP32",
                                 "data": []}]}).encode(), 400, "elements; at most"),
        (json.dumps(v2_body(FEATURES, outputs="risk")).encode(), 400, "'outputs' must be"),
    ],
    # Short ids: pytest puts the test id in PYTEST_CURRENT_TEST, and a 65 MB one makes the
    # environment too big to start swtpm.
    ids=["not-json", "no-inputs", "shape", "datatype", "count", "name", "values", "quoted",
         "booleans", "oversized",
         "deep", "huge-shape", "outputs"],
)  # fmt: skip
def test_bad_input_gets_a_4xx_that_says_what_was_wrong(
    served: Served, body: bytes, status: int, message: str
) -> None:
    with served.client() as http:
        answer = http.post("/v2/models/risk-demo/infer", content=body,
                           headers={"Content-Type": "application/json"})  # fmt: skip
        assert answer.status_code == status, answer.text
        assert message in answer.json()["error"]
        assert answer.json()["hint"]  # and what to do
        assert http.get("/v2/health/live").status_code == 200  # still up


def _tensor(shape: list[int], data: object) -> bytes:
    return json.dumps({"inputs": [{"name": "features", "shape": shape, "datatype": "FP32",
                                   "data": data}]}).encode()  # fmt: skip


def test_booleans_among_numbers_and_batches_of_no_cases_are_refused(served: Served) -> None:
    """JSON true and false among an FP32 tensor's numbers were read as 1.0 and 0.0 (Python's bool
    is an int) and scored, as if the client had meant them; a batch of no cases, as JSON or as
    binary tensor data, was a 200 with empty outputs. Each is a 400 naming the input."""
    row = [0.5] * 7
    booleans, empty = ("booleans", "booleans only for BOOL"), ("no cases", "at least one case")
    cases = {
        "true among floats": (_tensor([1, 8], [1.0, True, *row[1:]]), {}, booleans),
        "false among integers": (_tensor([1, 8], [False, *[1] * 7]), {}, booleans),
        "nested": (_tensor([2, 8], [[*row, 1.0], [*row, True]]), {}, booleans),
        "no cases": (_tensor([0, 8], []), {}, empty),
        "no cases, binary": (*_binary_request(_binary_input(0, [0, 8]), b""), empty),
    }
    with served.client() as http:
        for case, (body, headers, (words, what_to_do)) in cases.items():
            answer = http.post("/v2/models/risk-demo/infer", content=body,
                               headers={"Content-Type": "application/json", **headers})  # fmt: skip
            assert answer.status_code == 400, (case, answer.text)
            error, hint = answer.json()["error"], answer.json()["hint"]
            assert "input 'features'" in error and words in error, (case, error)
            assert what_to_do in hint, (case, hint)
        ok = http.post("/v2/models/risk-demo/infer", json=v2_body(FEATURES))
        assert ok.status_code == 200, ok.text  # the box still serves
    assert served.api.services.results.count() == 1  # only that one: nothing refused was kept


def test_auth_is_required_and_denials_are_audited(served: Served) -> None:
    with served.client(None) as http:
        answer = http.post("/v2/models/risk-demo/infer", json=v2_body(FEATURES))
        assert answer.status_code == 401 and "bearer token" in answer.json()["error"]
    with served.client(Role.AUDITOR) as http:
        answer = http.post("/v2/models/risk-demo/infer", json=v2_body(FEATURES))
        assert answer.status_code == 403 and "may not call" in answer.json()["error"]
    denials = [r for r in served.rt.audit.records() if r.event is AuditEvent.PERMISSION_DENIED]
    assert denials[-1].actor == "user-auditor"


def test_phi_requests_are_audited_with_the_subject_hashed(served: Served) -> None:
    with served.client() as http:
        http.post("/v2/models/risk-demo/infer",
                  json=v2_body(FEATURES, parameters={"subject_id": "MRN-40917733"}))  # fmt: skip
    record = [r for r in served.rt.audit.records() if r.event is AuditEvent.INFERENCE][-1]
    assert record.subject == hash_subject(served.rt.audit_key, "MRN-40917733")
    assert record.model == "risk-demo 1.0.0" and record.actor == "user-service"
    for path in served.config.state_dir.rglob("*"):
        if path.is_file():
            assert b"MRN-40917733" not in path.read_bytes(), path


def test_hot_swap_fails_no_request_in_flight(served: Served) -> None:
    failures: list[str] = []
    versions: set[str] = set()
    stop = threading.Event()

    def load() -> None:
        with served.client() as http:
            while not stop.is_set():
                answer = http.post("/v2/models/risk-demo/infer", json=v2_body(FEATURES))
                if answer.status_code != 200:
                    failures.append(answer.text)
                else:
                    versions.add(answer.json()["model_version"])

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    served.install("1.1.0")  # the watcher thread picks the new slot up by itself
    deadline = time.monotonic() + 30
    while "1.1.0" not in versions and time.monotonic() < deadline and not failures:
        time.sleep(0.05)
    stop.set()
    for w in workers:
        w.join()
    assert not failures
    assert versions == {"1.0.0", "1.1.0"}


def test_metrics_count_requests_per_model_and_device(served: Served) -> None:
    with served.client() as http:
        http.post("/v2/models/risk-demo/infer", json=v2_body(FEATURES))
    with served.client(Role.ADMIN) as http:
        text = http.get("/metrics").text
    assert 'appliance_inference_requests_total{device="CPU",model="risk-demo",status="ok"}' in text
    assert "appliance_model_load_seconds" in text


def test_an_inference_that_fails_after_its_access_was_audited_is_audited_as_failed(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A valid request is audited as it starts (the record's fsync overlaps the inference); when
    the engine then fails (a fault injected into ServedModel.infer: a real model does not fail
    on valid input), a FAILURE record with the same request id follows and nothing is stored."""

    def broken(self: ServedModel, inputs: object) -> dict[str, np.ndarray]:
        raise InferenceError("inference failed: injected fault.", "Nothing to do: a test.")

    monkeypatch.setattr(ServedModel, "infer", broken)
    with served.client() as http:
        answer = http.post("/v2/models/risk-demo/infer", json=v2_body(FEATURES))
    assert answer.status_code == 400 and "injected" in answer.json()["error"], answer.text
    records = [r for r in served.rt.audit.records() if r.event is AuditEvent.INFERENCE]
    access, failure = records[-2:]
    assert access.outcome == "success" and failure.outcome == "failure"
    assert access.detail["request_id"] == failure.detail["request_id"]
    assert "injected" in failure.detail["reason"]
    assert served.api.services.results.count() == 0


def test_a_refusal_that_quotes_an_unpaired_surrogate_is_still_a_400(served: Served) -> None:
    """JSON may escape half a surrogate pair ("\\ud800"), which no UTF-8 answer can carry: a
    refusal that quotes such a value (NEWS2 echoes an unknown consciousness level) was a 500."""
    vitals = {"respiration_rate": 16, "spo2": 97, "on_oxygen": False, "systolic_bp": 120,
              "pulse": 70, "consciousness": "\ud800", "temperature": 37.0}  # fmt: skip
    body = json.dumps({"observations": [vitals]}).encode()
    with served.client() as http:
        answer = http.post("/v1/tasks/risk-score/news2", content=body,
                           headers={"Content-Type": "application/json"})  # fmt: skip
        assert answer.status_code == 400, answer.text
        assert "consciousness '\\ud800'" in answer.json()["error"] and answer.json()["hint"]
        assert http.get("/v2/health/live").status_code == 200


def test_a_subject_id_that_is_not_a_short_string_is_refused(served: Served) -> None:
    """The v2 route took any JSON as parameters.subject_id: an object or a list was audited as
    the hash of its Python repr, a number as its digits, and half a surrogate pair was a 500.
    Like the task routes, it takes a string of at most 128 characters."""
    bad = [{"mrn": "1"}, ["MRN-1"], 40917733, True, "x" * 129, "\ud800"]
    with served.client() as http:
        for subject in bad:
            body = json.dumps(v2_body(FEATURES, parameters={"subject_id": subject})).encode()
            answer = http.post("/v2/models/risk-demo/infer", content=body,
                               headers={"Content-Type": "application/json"})  # fmt: skip
            assert answer.status_code == 400, (subject, answer.text)
            assert "subject_id" in answer.json()["error"] and answer.json()["hint"]
        assert http.get("/v2/health/live").status_code == 200
    assert not [r for r in served.rt.audit.records() if r.event is AuditEvent.INFERENCE]
    assert served.api.services.results.count() == 0


def _chunked(size: int) -> Iterator[bytes]:
    """``size`` bytes sent without a Content-Length (chunked transfer encoding)."""
    for _ in range(size >> 20):
        yield b" " * (1 << 20)


TASK_ROUTES = ["/v1/tasks/risk-score", "/v1/tasks/notes", "/v1/tasks/risk-score/news2"]


def test_an_oversized_chunked_body_is_a_413_on_every_route(served: Served) -> None:
    """Without a Content-Length the limit is found while the body is read: the JSON task routes
    answered "There was an error parsing the body" (FastAPI's wrapper of the limit's error), the
    v2 and study routes a 400; the client could not tell that the body was too large."""
    with served.client() as http:
        for path in ["/v2/models/risk-demo/infer", "/v1/tasks/studies", *TASK_ROUTES]:
            answer = http.post(path, content=_chunked(65 << 20),
                               headers={"Content-Type": "application/json"})  # fmt: skip
            assert answer.status_code == 413, (path, answer.text)
            assert "at most" in answer.json()["error"] and answer.json()["hint"], answer.text
        assert http.get("/v2/health/live").status_code == 200


@pytest.mark.parametrize(
    ("body", "words"),
    [(b'{"text": "caf\xe9"}', "UTF-8"), (b"[" * 100_000 + b"]" * 100_000, "nested")],
    ids=["latin-1", "deep"],
)
def test_a_task_body_that_cannot_be_read_is_a_400_saying_why(
    served: Served, body: bytes, words: str
) -> None:
    with served.client() as http:
        for path in TASK_ROUTES:
            answer = http.post(path, content=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 400, (path, answer.text)
            assert words in answer.json()["error"], (path, answer.text)


def test_a_task_naming_a_model_that_is_not_served_is_a_404(served: Served) -> None:
    """A typo in 'model' is the client's error: it was a 503 (service unavailable), which
    monitoring counts as the box failing and clients retry."""
    with served.client(Role.CLINICIAN) as http:
        for name in ["no-such-model", "notes-phi"]:
            answer = http.post("/v1/tasks/risk-score",
                               json={"features": FEATURES.tolist(), "model": name})  # fmt: skip
            assert answer.status_code == 404, answer.text
            assert name in answer.json()["error"] and "risk-demo" in answer.json()["hint"]


def test_risk_features_that_are_not_numbers_are_refused(served: Served) -> None:
    """Strings and booleans were turned into numbers ("0.5" -> 0.5, true -> 1.0) and scored,
    so a client that quotes its numbers or sends flags got a score for inputs it never meant;
    NEWS2 already refuses '72' as a pulse."""
    with served.client(Role.CLINICIAN) as http:
        for value in ["0.5", True]:
            answer = http.post("/v1/tasks/risk-score", json={"features": [[value] * 8]})
            assert answer.status_code == 400, (value, answer.text)
            assert "features.0.0" in answer.json()["error"], answer.text
    assert served.api.services.results.count() == 0
