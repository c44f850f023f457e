"""The study path runs the imaging reference model with the imaging package's own pre- and
post-processing (appliance/imaging), chosen from the model's outputs, on real OpenVINO."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from appliance.dicom.analysis import ModelAnalyser, _is_imaging_model
from appliance.imaging.postprocess import HEATMAP, SCORE, SliceFinding
from appliance.inference.engine import compile, infer, output_names

MODEL = Path(__file__).resolve().parents[2] / "models" / "imaging-anomaly" / "model.xml"


@dataclass
class Served:
    """The registry's ServedModel as the analyser sees it: a compiled model and its outputs."""

    compiled: Any
    provenance: Any = None

    def infer(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return infer(self.compiled, inputs, names=output_names(self.compiled, {SCORE, HEATMAP}))


class Source:
    def __init__(self, served: Served) -> None:
        self.served = served

    def get(self, name: str, version: str | None = None) -> Served:
        return self.served


@pytest.fixture(scope="module")
def imaging() -> Served:
    if not MODEL.exists():
        pytest.skip(f"{MODEL} is missing: `make models` builds it")
    core = ov.Core()
    compiled = compile(core.read_model(str(MODEL)), "CPU", core=core)  # as the registry serves it
    return Served(compiled, provenance=type("P", (), {"as_dict": lambda self: {}})())


def test_the_imaging_model_is_recognised_by_its_outputs(imaging: Served) -> None:
    assert _is_imaging_model(imaging)


def test_a_real_ct_slice_goes_through_the_imaging_preprocessing(imaging: Served) -> None:
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    findings = ModelAnalyser(Source(imaging), "imaging-anomaly").analyse([ds])
    ((uid, finding),) = findings.slices
    assert uid == str(ds.SOPInstanceUID)
    assert isinstance(finding, SliceFinding)  # the imaging package's summary, not the default
    assert 0.0 <= finding.score <= 1.0 and np.isfinite(finding.heatmap).all()
