"""NEWS2 over the real API (uvicorn, TLS, real tokens, real audit log and results database):
scores with provenance, durable and audited; bad vitals refused with a 400 that names them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import appliance.risk.news2 as news2_module
from appliance.audit.records import AuditEvent, hash_subject
from appliance.identity.roles import Role
from tests.api.conftest import Served

ROUTE = "/v1/tasks/risk-score/news2"
NORMAL: dict[str, Any] = {
    "respiration_rate": 16, "spo2": 97, "on_oxygen": False, "systolic_bp": 120, "pulse": 70,
    "consciousness": "alert", "temperature": 37.0,
}  # fmt: skip
SEPTIC = NORMAL | {"respiration_rate": 24, "spo2": 93, "systolic_bp": 98, "pulse": 115,
                   "temperature": 38.5}  # fmt: skip
COPD_ON_TARGET = NORMAL | {"spo2": 90, "on_oxygen": True, "spo2_scale": 2}


def test_news2_scores_with_provenance_durably_and_audited(served: Served) -> None:
    body = {"subject_id": "MRN-55501", "observations": [NORMAL, SEPTIC, COPD_ON_TARGET]}
    with served.client(Role.CLINICIAN) as http:
        answer = http.post(ROUTE, json=body)
        assert answer.status_code == 200, answer.text
        got = answer.json()
        scores = got["result"]["scores"]
        assert [(s["news2"], s["risk"]) for s in scores] == [(0, "low"), (9, "high"), (2, "low")]
        assert scores[1]["points"]["pulse"] == 2 and scores[1]["response"].startswith("Emergency")
        prov = got["provenance"]
        assert prov["model_name"] == "NEWS2 (RCP 2017)" and prov["slot"] == "built-in"
        code = Path(news2_module.__file__).read_bytes()
        assert prov["bundle_sha256"] == hashlib.sha256(code).hexdigest()
        stored = http.get(f"/v1/results/{got['request_id']}")
        assert stored.status_code == 200, stored.text
        assert stored.json()["outputs"] == got["result"]
        assert stored.json()["route"] == "risk-score/news2"
    record = [r for r in served.rt.audit.records() if r.event is AuditEvent.INFERENCE][-1]
    assert record.model == "NEWS2 (RCP 2017)" and record.actor == "user-clinician"
    assert record.subject == hash_subject(served.rt.audit_key, "MRN-55501")


BAD = [
    ({k: v for k, v in NORMAL.items() if k != "pulse"}, "missing: pulse"),
    (NORMAL | {"pulse": 900}, "pulse 900"),
    (NORMAL | {"temperature": 98.6}, "temperature 98.6"),
    (NORMAL | {"pulse": 72.5}, "not a whole number"),
    (NORMAL | {"pulse": "72"}, "observations.1.pulse"),
    (NORMAL | {"on_oxygen": 1}, "observations.1.on_oxygen"),
    (NORMAL | {"consciousness": "drowsy"}, "consciousness 'drowsy'"),
    (NORMAL | {"spo2_scale": 3}, "spo2_scale must be 1 or 2"),
    (NORMAL | {"heart_rate": 70}, "observations.1.heart_rate"),
]


def test_bad_vitals_are_refused_and_nothing_is_recorded(served: Served) -> None:
    # One server for every case: starting one (swtpm, bundle install, TLS) is the slow part.
    with served.client() as http:
        for observation, message in BAD:
            answer = http.post(ROUTE, json={"observations": [NORMAL, observation]})
            assert answer.status_code == 400, (message, answer.text)
            assert message in answer.json()["error"] and answer.json()["hint"]
        assert http.get("/v2/health/live").status_code == 200
    assert not [r for r in served.rt.audit.records() if r.event is AuditEvent.INFERENCE]


def test_news2_needs_a_token_and_the_infer_permission(served: Served) -> None:
    with served.client(None) as http:
        assert http.post(ROUTE, json={"observations": [NORMAL]}).status_code == 401
    with served.client(Role.AUDITOR) as http:
        answer = http.post(ROUTE, json={"observations": [NORMAL]})
        assert answer.status_code == 403 and "may not call" in answer.json()["error"]


VALUE = (st.integers(min_value=-(10**30), max_value=10**30) | st.floats() | st.booleans()
         | st.text(max_size=8) | st.none())  # fmt: skip
FIELD = {
    "respiration_rate": VALUE | st.integers(0, 90), "spo2": VALUE | st.integers(40, 110),
    "spo2_scale": VALUE | st.sampled_from([1, 2]), "on_oxygen": VALUE,
    "systolic_bp": VALUE | st.integers(30, 320), "pulse": VALUE | st.floats(10, 320),
    "consciousness": VALUE | st.sampled_from(["alert", "voice", "pain", "Alert", ""]),
    "temperature": VALUE | st.floats(20, 120), "other": VALUE,
}  # fmt: skip
OBSERVATION = st.fixed_dictionaries({}, optional=FIELD)
BODY = st.fixed_dictionaries(
    {"observations": st.lists(OBSERVATION, max_size=3)}, optional={"subject_id": VALUE}
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(body=BODY)
def test_fuzzed_vitals_never_get_a_500(served: Served, body: dict[str, Any]) -> None:
    with served.client() as http:
        data = json.dumps(body, allow_nan=True).encode()
        answer = http.post(ROUTE, content=data, headers={"Content-Type": "application/json"})
        assert answer.status_code in (200, 400), (body, answer.text)
        if answer.status_code == 400:
            assert answer.json()["error"] and answer.json()["hint"]
