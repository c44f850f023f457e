"""The model's outputs into a finding, on the committed imaging model run by OpenVINO on CPU."""

from __future__ import annotations

import numpy as np
import openvino as ov
import pydicom
import pytest
from pydicom.data import get_testdata_file

from appliance.imaging import ModelOutputError, SliceFinding, slice_to_input, summarise
from appliance.imaging.postprocess import HEATMAP, SCORE
from appliance.inference.engine import infer, output_names
from tests.models.imaging import FOLDER


@pytest.fixture(scope="module")
def core() -> ov.Core:
    return ov.Core()  # outlives the compiled model (OpenVINO aborts otherwise)


@pytest.fixture(scope="module")
def model(core: ov.Core) -> ov.CompiledModel:
    return core.compile_model(str(FOLDER / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def _run(model: ov.CompiledModel, x: np.ndarray) -> dict[str, np.ndarray]:
    return infer(model, {"image": x}, names=output_names(model, {SCORE, HEATMAP}))


def test_a_bright_lesion_raises_the_score_and_lights_up_its_place(model: ov.CompiledModel) -> None:
    x = slice_to_input(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
    clean = summarise(_run(model, x))
    yy, xx = np.mgrid[0:128, 0:128]
    blob = ((yy - 70) ** 2 + (xx - 60) ** 2 <= 36).astype(np.float32)
    lesion = summarise(_run(model, x + 0.4 * blob[None, None]))
    assert isinstance(lesion, SliceFinding) and lesion.heatmap.shape == (128, 128)
    assert 0.0 <= clean.score < lesion.score <= 1.0
    peak = np.unravel_index(np.argmax(lesion.heatmap), lesion.heatmap.shape)
    assert abs(peak[0] - 70) <= 6 and abs(peak[1] - 60) <= 6


def test_outputs_of_another_model_are_refused() -> None:
    with pytest.raises(ModelOutputError, match="no 'heatmap' output"):
        summarise({"score": np.zeros((1, 1), np.float32)})
    with pytest.raises(ModelOutputError, match="one slice needs"):
        summarise({"score": np.zeros((2, 1)), "heatmap": np.zeros((2, 1, 8, 8))})
    with pytest.raises(ModelOutputError, match="outside"):
        summarise({"score": np.full((1, 1), 3.0), "heatmap": np.zeros((1, 1, 8, 8))})
