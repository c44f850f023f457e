"""Every reference model folder, signed into a bundle by the vendor's code, installs through the
real update agent on a real swtpm and passes the box's validation gate on this CPU; the risk model
is then served over TLS with results equal to scikit-learn's; a model that misses its own claim
is rolled back."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from appliance.api.server import serve
from appliance.audit.records import AuditEvent
from appliance.identity.roles import Role
from appliance.updates.agent import Phase
from appliance.updates.manifest import load_model_dir
from appliance.updates.validate import CASES_FILE, LABELS
from appliance.updates.wiring import make_agent
from provisioning import riskmodel as rm
from provisioning.vendor import build_bundle
from tests.api.conftest import Served
from tests.updates.conftest import NOT_BEFORE

MODELS = Path(__file__).resolve().parents[2] / "models"
FOLDERS = sorted(p.parent for p in MODELS.glob("*/manifest.json"))


def install(box: Served, folder: Path) -> tuple[Phase, str]:
    manifest, _ = load_model_dir(folder)
    out = box.sim.out / f"{manifest.name}-{manifest.version}-{folder.parent.name}.aplbundle"
    bundle = build_bundle(folder, box.sim.repo, box.sim.signers(), out, not_before=NOT_BEFORE)
    state = make_agent(box.rt, "tech").install(bundle.path)
    return state.phase, state.reason or ""


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_the_model_bundle_installs_and_passes_the_validation_gate(
    prepared: Served, folder: Path
) -> None:
    phase, reason = install(prepared, folder)
    assert phase is Phase.DONE, reason
    manifest, _ = load_model_dir(folder)
    assert f"{manifest.reference.metric} " in reason and " meets the vendor's" in reason
    installed = [r for r in prepared.rt.audit.records() if r.event is AuditEvent.UPDATE_INSTALLED]
    assert installed[-1].model == f"{manifest.name} {manifest.version}"


def test_the_risk_model_is_served_with_scikit_learns_answers(prepared: Served) -> None:
    folder = MODELS / rm.NAME
    assert install(prepared, folder)[0] is Phase.DONE
    with np.load(folder / CASES_FILE, allow_pickle=False) as npz:
        x, y = npz[rm.INPUT][:40], npz[LABELS][:40]
    expected = rm.fit(rm.load_split()).predict(x)
    prepared.api = serve(prepared.rt, ov.Core(), port=0)
    try:
        with prepared.client(Role.CLINICIAN) as http:
            body = {"features": x.tolist(), "model": rm.NAME}  # risk-demo is installed too
            answer = http.post("/v1/tasks/risk-score", json=body)
            assert answer.status_code == 200, answer.text
            got = answer.json()
            assert got["provenance"]["model_name"] == rm.NAME
            # The API rounds to 6 decimals (<= 5e-7); the model itself is within 1e-6.
            np.testing.assert_allclose(got["result"]["scores"], expected, rtol=0, atol=1.5e-6)
            assert ((np.asarray(got["result"]["scores"]) >= 0.5) == y.astype(bool)).mean() > 0.9
            wrong = http.post("/v1/tasks/risk-score", json=body | {"features": [[1.0] * 8]})
            assert wrong.status_code == 400 and "30 numbers" in wrong.json()["error"]
    finally:
        prepared.api.stop()


def test_a_model_that_misses_its_own_claim_is_rolled_back(prepared: Served, tmp_path: Path) -> None:
    """A signed, well-formed bundle whose model ranks cases backwards: only the gate stops it."""
    folder = tmp_path / rm.NAME
    shutil.copytree(MODELS / rm.NAME, folder)
    fitted = rm.fit(rm.load_split())
    flipped = rm.Fitted(fitted.pipeline, fitted.exact, fitted.mean, fitted.scale, -fitted.coef,
                        fitted.intercept, fitted.strength)  # fmt: skip
    ov.save_model(rm.openvino_model(flipped), str(folder / "model.xml"), compress_to_fp16=False)
    phase, reason = install(prepared, folder)
    assert phase is Phase.FAILURE and "is below the vendor's" in reason, reason
    refused = [r for r in prepared.rt.audit.records() if r.event is AuditEvent.UPDATE_REFUSED]
    assert refused and rm.NAME in str(refused[-1].model)
