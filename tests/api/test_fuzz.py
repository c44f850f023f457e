"""Hypothesis fuzzing of the request schemas against the live server: never a 500, it stays up."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import Served

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=6) | st.dictionaries(st.text(max_size=8), kids),
    max_leaves=30,
)  # fmt: skip
DATATYPES = st.sampled_from(["FP32", "FP64", "INT64", "BOOL", "BYTES", "fp32", "", "FP16"])
SHAPES = st.lists(st.integers(min_value=-3, max_value=12), max_size=4)
VALUES = st.one_of(st.floats(), st.integers(), st.booleans(), st.text(max_size=3), st.none())
TENSOR = st.fixed_dictionaries(
    {"name": st.sampled_from(["features", "risk", "x", ""]), "shape": SHAPES,
     "datatype": DATATYPES, "data": st.lists(VALUES, max_size=40)},
)  # fmt: skip
OUTPUTS = st.lists(st.fixed_dictionaries({"name": JSON}), max_size=2)
V2 = st.fixed_dictionaries(
    {"inputs": st.lists(TENSOR, max_size=3)},
    optional={"id": JSON, "parameters": JSON, "outputs": OUTPUTS},
)  # fmt: skip
RISK = st.fixed_dictionaries(
    {"features": st.lists(st.lists(st.floats(), max_size=10), max_size=5)},
    optional={"subject_id": JSON, "extra": JSON},
)  # fmt: skip
ROUTES = [
    "/v2/models/risk-demo/infer", "/v1/tasks/risk-score", "/v1/tasks/notes",
    "/v1/tasks/studies", "/v2/models/no-such/infer",
]  # fmt: skip
FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _check(served: Served, path: str, body: bytes) -> None:
    with served.client() as http:
        answer = http.post(path, content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code < 500, (path, body[:300], answer.text)
        if answer.status_code >= 400:
            assert answer.json()["error"] and answer.json()["hint"]


@FUZZ
@given(route=st.sampled_from(ROUTES), body=st.one_of(V2, RISK, JSON))
def test_structured_requests_never_get_a_500(served: Served, route: str, body: Any) -> None:
    _check(served, route, json.dumps(body, allow_nan=True).encode())


@FUZZ
@given(route=st.sampled_from(ROUTES), body=st.binary(max_size=200))
def test_arbitrary_bytes_never_get_a_500(served: Served, route: str, body: bytes) -> None:
    _check(served, route, body)
    with served.client() as http:
        assert http.get("/v2/health/live").status_code == 200
