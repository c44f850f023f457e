"""Every API entry point x every role over real HTTPS: allowed or 403, and each denial audited."""

from __future__ import annotations

import pytest

from appliance.audit.records import AuditEvent
from appliance.identity.roles import ENTRY_POINTS, Role, may

from .conftest import Served
from .test_api import FEATURES, v2_body

REQUESTS: dict[str, tuple[str, str, object]] = {
    "api:GET /v2/health/live": ("GET", "/v2/health/live", None),
    "api:GET /v2/health/ready": ("GET", "/v2/health/ready", None),
    "api:GET /v2": ("GET", "/v2", None),
    "api:GET /v2/models/{name}": ("GET", "/v2/models/risk-demo", None),
    "api:GET /v2/models/{name}/ready": ("GET", "/v2/models/risk-demo/ready", None),
    "api:POST /v2/models/{name}/infer": ("POST", "/v2/models/risk-demo/infer", v2_body(FEATURES)),
    "api:POST /v1/tasks/risk-score": ("POST", "/v1/tasks/risk-score",
                                      {"features": FEATURES.tolist()}),
    "api:POST /v1/tasks/risk-score/news2": ("POST", "/v1/tasks/risk-score/news2", {"observations": [
        {"respiration_rate": 16, "spo2": 97, "on_oxygen": False, "systolic_bp": 120, "pulse": 70,
         "consciousness": "alert", "temperature": 37.0}]}),
    "api:POST /v1/tasks/notes": ("POST", "/v1/tasks/notes", {"text": "seen today"}),
    "api:POST /v1/tasks/studies": ("POST", "/v1/tasks/studies", {"study_instance_uid": "1.2.3"}),
    "api:GET /v1/results/{request_id}": ("GET", "/v1/results/unknown", None),
    "api:GET /metrics": ("GET", "/metrics", None),
}  # fmt: skip


def test_every_api_entry_point_has_a_request_here() -> None:
    assert set(REQUESTS) == {e for e in ENTRY_POINTS if e.startswith("api:")}


def test_api_permission_matrix(served: Served) -> None:
    expected_denials = 0
    for entry, (method, path, body) in REQUESTS.items():
        for role in Role:
            with served.client(role) as http:
                answer = http.request(method, path, json=body)
            denied = answer.status_code == 403
            assert denied != may(role, ENTRY_POINTS[entry]), (entry, role, answer.text)
            expected_denials += denied
        with served.client(None) as http:
            assert http.request(method, path, json=body).status_code == 401, entry
    denials = [r for r in served.rt.audit.records() if r.event is AuditEvent.PERMISSION_DENIED]
    assert len(denials) == expected_denials > 0


@pytest.mark.parametrize("role", [Role.CLINICIAN, Role.SERVICE, Role.BREAK_GLASS])
def test_clinical_roles_can_infer(served: Served, role: Role) -> None:
    with served.client(role) as http:
        assert http.post("/v2/models/risk-demo/infer", json=v2_body(FEATURES)).status_code == 200
