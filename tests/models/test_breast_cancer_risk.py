"""models/breast-cancer-risk: the committed files are what the recipe builds, the card's figures
are what OpenVINO measures on this CPU, and every runtime agrees with scikit-learn to 1e-6."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from appliance.inference.engine import load_model, openvino_version
from appliance.updates.validate import CASES_FILE, LABELS
from provisioning import riskmodel as rm
from provisioning.riskcard import metric_lines, parity_line

FOLDER = Path(__file__).resolve().parents[2] / "models" / rm.NAME


@pytest.fixture(scope="module")
def core() -> ov.Core:
    return ov.Core()


@pytest.fixture(scope="module")
def fitted() -> tuple[rm.Split, rm.Fitted]:
    split = rm.load_split()
    return split, rm.fit(split)


@pytest.fixture(scope="module")
def cases() -> tuple[np.ndarray, np.ndarray]:
    with np.load(FOLDER / CASES_FILE, allow_pickle=False) as npz:
        return npz[rm.INPUT], npz[LABELS]


def test_the_recipe_rebuilds_every_committed_file_byte_for_byte(tmp_path: Path) -> None:
    # The recipe as `make models` runs it, in a fresh process, into another folder.
    script = FOLDER / "build.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    for name in (*rm.BUILT_FILES, "SHA256SUMS"):
        assert (tmp_path / name).read_bytes() == (FOLDER / name).read_bytes(), name


def test_sha256sums_match_the_committed_files() -> None:
    listed = dict(
        reversed(line.split("  ", 1)) for line in (FOLDER / "SHA256SUMS").read_text().splitlines()
    )
    assert sorted(listed) == sorted(rm.BUILT_FILES)
    assert rm.sha256sums(FOLDER, rm.BUILT_FILES) == (FOLDER / "SHA256SUMS").read_text()


def test_the_reference_set_is_the_held_out_split(
    fitted: tuple[rm.Split, rm.Fitted], cases: tuple[np.ndarray, np.ndarray]
) -> None:
    split, _ = fitted
    x, y = cases
    assert x.dtype == np.float32 and x.shape == (171, rm.FEATURES)
    np.testing.assert_array_equal(x, split.x_test)
    np.testing.assert_array_equal(y, split.y_test)
    train = {row.tobytes() for row in split.x_train}
    assert not any(row.tobytes() in train for row in x)  # no held-out case was trained on


def test_card_metrics_are_remeasured_with_openvino_on_the_cpu(
    core: ov.Core, fitted: tuple[rm.Split, rm.Fitted], cases: tuple[np.ndarray, np.ndarray]
) -> None:
    _, model = fitted
    x, y = cases
    sk = model.predict(x)
    xml, weights = (FOLDER / "model.xml").read_bytes(), (FOLDER / "model.bin").read_bytes()
    measured = rm.measure(rm.openvino_risk(xml, weights, x, core), y, sk)
    card = (FOLDER / "CARD.md").read_text()
    for line in metric_lines(measured):
        assert line in card.splitlines(), line
    assert measured.parity <= rm.PARITY_LIMIT  # on every held-out case
    assert parity_line(f"OpenVINO {openvino_version().split('-')[0]} CPU", measured) in card
    assert measured.auc >= 0.99 and measured.brier <= 0.02
    ort = rm.measure(rm.onnxruntime_risk((FOLDER / "model.onnx").read_bytes(), x), y, sk)
    assert ort.parity <= rm.PARITY_LIMIT
    assert parity_line("onnxruntime CPU", ort) in card


def test_the_graphs_hold_f32_weights_in_standard_ops_only(core: ov.Core) -> None:
    import onnx

    xml, weights = (FOLDER / "model.xml").read_bytes(), (FOLDER / "model.bin").read_bytes()
    model = load_model(xml, bytearray(weights), core=core)
    kinds = {op.get_type_name() for op in model.get_ops()}
    assert kinds == {"Parameter", "Constant", "Subtract", "Divide", "MatMul", "Add", "Sigmoid",
                     "Result"}  # fmt: skip
    constants = [op for op in model.get_ops() if op.get_type_name() == "Constant"]
    assert {str(c.get_element_type()) for c in constants} == {"<Type: 'float32'>"}
    graph = onnx.load_from_string((FOLDER / "model.onnx").read_bytes())
    assert {o.domain for o in graph.opset_import} == {""}  # no ai.onnx.ml
    assert [n.op_type for n in graph.graph.node] == ["Sub", "Div", "MatMul", "Add", "Sigmoid"]
    assert {t.data_type for t in graph.graph.initializer} == {onnx.TensorProto.FLOAT}


def test_bf16_default_would_break_parity_where_the_cpu_has_it(
    core: ov.Core, fitted: tuple[rm.Split, rm.Fitted], cases: tuple[np.ndarray, np.ndarray]
) -> None:
    """Why the engine's f32 hint matters: this CPU's default precision, measured, for the card."""
    if "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bf16: its default precision is f32 already")
    _, model = fitted
    x, y = cases
    xml, weights = (FOLDER / "model.xml").read_bytes(), (FOLDER / "model.bin").read_bytes()
    compiled = core.compile_model(load_model(xml, bytearray(weights), core=core), "CPU")
    default = compiled.get_property("INFERENCE_PRECISION_HINT")
    out = compiled({rm.INPUT: x})[compiled.output(0)].reshape(-1).astype(np.float64)
    sk = model.predict(x)
    gap = float(np.max(np.abs(out - sk)))
    flips = int(np.sum((out >= 0.5) != (sk >= 0.5)))
    print(
        f"\nCPU default precision {default}: max |OpenVINO - scikit-learn| = {gap:.2e}, "
        f"{flips} of {len(x)} decisions at 0.5 flipped, Brier {rm.brier(out, y):.4f}"
    )
    assert gap > 0.1 and flips
