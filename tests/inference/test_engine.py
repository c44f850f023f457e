"""The inference engine on the real OpenVINO CPU device, with the tiny risk model from provisioning.

Models are read from bytes in memory; the scenarios check that nothing lands on disk, that the
precision is f32 unless asked otherwise, and that OpenVINO's failures arrive as InferenceError.
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from appliance.errors import ApplianceError
from appliance.inference import (
    InferenceError,
    available_devices,
    compile,
    load_model,
    openvino_version,
    run_cases,
)
from appliance.inference.engine import infer, output_names
from provisioning.testmodel import BIAS, WEIGHTS, build_model_dir, reference_cases


@pytest.fixture(scope="module")
def core() -> ov.Core:
    return ov.Core()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("risk"), cases=50)


@pytest.fixture(scope="module")
def ir(model_dir: Path) -> tuple[bytes, bytes]:
    return (model_dir / "model.xml").read_bytes(), (model_dir / "model.bin").read_bytes()


def expected_risk(features: np.ndarray) -> np.ndarray:
    logits = features.astype(np.float64) @ WEIGHTS.astype(np.float64) + float(BIAS)
    return 1.0 / (1.0 + np.exp(-logits))


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    }


def test_model_is_read_from_memory_and_nothing_is_written(
    core: ov.Core,
    ir: tuple[bytes, bytes],
    model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    before = snapshot(model_dir)
    features, _ = reference_cases(50, 7)

    compiled = compile(load_model(ir[0], bytearray(ir[1]), core=core), core=core)
    risk = run_cases(compiled, {"features": features}, "risk")

    assert risk.shape == (50, 1)
    np.testing.assert_allclose(risk[:, 0], expected_risk(features), rtol=1e-5)
    assert list(workdir.iterdir()) == []
    assert snapshot(model_dir) == before


def test_compiled_model_runs_in_f32_not_the_cpus_bf16_default(
    core: ov.Core, ir: tuple[bytes, bytes]
) -> None:
    model = load_model(*ir, core=core)
    latency = compile(model, "CPU", core=core)
    throughput = compile(model, "CPU", core=core, latency=False)

    assert latency.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert str(latency.get_property("PERFORMANCE_HINT")) == "LATENCY"
    assert throughput.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert str(throughput.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"


def test_int8_leaves_the_devices_default_precision(core: ov.Core, ir: tuple[bytes, bytes]) -> None:
    compiled = compile(load_model(*ir, core=core), core=core, int8=True)
    default = core.get_property("CPU", "INFERENCE_PRECISION_HINT")
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == default


def test_corrupted_xml_is_refused_with_openvinos_reason(
    core: ov.Core, ir: tuple[bytes, bytes]
) -> None:
    with pytest.raises(InferenceError) as caught:
        load_model(ir[0][: len(ir[0]) // 2], ir[1], core=core)
    error = caught.value
    assert isinstance(error, ApplianceError)
    assert error.message.startswith("the model could not be read: ")
    assert "Exception from" not in error.message
    assert error.hint is not None and "vendor" in error.hint


def test_truncated_weights_are_refused(core: ov.Core, ir: tuple[bytes, bytes]) -> None:
    with pytest.raises(InferenceError, match="could not be read: .*weights"):
        load_model(ir[0], ir[1][:-4], core=core)


def test_weights_buffer_is_shared_and_outlives_the_callers_reference(
    core: ov.Core, ir: tuple[bytes, bytes]
) -> None:
    plaintext = bytearray(ir[1])
    model = load_model(ir[0], plaintext, core=core)
    with pytest.raises(BufferError):
        plaintext.extend(b"\0")  # shared with OpenVINO, not copied: it cannot move
    del plaintext
    gc.collect()

    features, _ = reference_cases(10, 3)
    risk = run_cases(compile(model, core=core), {"features": features}, "risk")
    np.testing.assert_allclose(risk[:, 0], expected_risk(features), rtol=1e-5)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_weights_may_be_any_byte_buffer(
    core: ov.Core, ir: tuple[bytes, bytes], kind: type[bytes | bytearray | memoryview]
) -> None:
    weights = kind(bytearray(ir[1])) if kind is memoryview else kind(ir[1])
    features, _ = reference_cases(5, 1)
    risk = run_cases(
        compile(load_model(ir[0], weights, core=core), core=core), {"features": features}, "risk"
    )
    np.testing.assert_allclose(risk[:, 0], expected_risk(features), rtol=1e-5)


def test_unknown_device_is_refused(core: ov.Core, ir: tuple[bytes, bytes]) -> None:
    with pytest.raises(InferenceError, match="could not be compiled for NOSUCH"):
        compile(load_model(*ir, core=core), "NOSUCH", core=core)


def test_fixed_batch_model_pads_the_last_batch(core: ov.Core, ir: tuple[bytes, bytes]) -> None:
    model = load_model(*ir, core=core)
    model.reshape({"features": [4, 8]})
    features, _ = reference_cases(10, 5)  # 4 + 4 + 2 (padded to 4)
    seen: list[tuple[int, int]] = []

    risk = run_cases(
        compile(model, core=core),
        {"features": features},
        "risk",
        progress=lambda d, t: seen.append((d, t)),
    )

    assert risk.shape == (10, 1)
    np.testing.assert_allclose(risk[:, 0], expected_risk(features), rtol=1e-5)
    assert seen[-1] == (10, 10)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_inputs_the_model_does_not_have_are_refused(core: ov.Core, ir: tuple[bytes, bytes]) -> None:
    compiled = compile(load_model(*ir, core=core), core=core)
    with pytest.raises(InferenceError, match="do not match"):
        run_cases(compiled, {"image": np.zeros((2, 8), np.float32)}, "risk")
    with pytest.raises(InferenceError, match="do not match"):
        run_cases(compiled, {"features": np.zeros((2, 8), np.float32)}, "score")


def test_a_wrong_case_shape_fails_as_inference_error(
    core: ov.Core, ir: tuple[bytes, bytes]
) -> None:
    compiled = compile(load_model(*ir, core=core), core=core)
    with pytest.raises(InferenceError, match="inference failed: "):
        run_cases(compiled, {"features": np.zeros((3, 7), np.float32)}, "risk")


def test_devices_and_version_are_reported(core: ov.Core) -> None:
    assert "CPU" in available_devices(core)
    assert openvino_version() == ov.get_version()
    assert int(openvino_version()[:4]) >= 2024


def test_outputs_are_named_as_the_manifest_names_them(core: ov.Core) -> None:
    """A compiled output can answer to two names (the CPU plugin keeps the name of a tensor it
    fused away); the engine keys results by the manifest's, not by whichever comes first."""
    import openvino.opset13 as ops

    image = ops.parameter([1, 4], ov.Type.f32, name="image")
    doubled = ops.multiply(image, ops.constant(np.float32(2.0)))
    doubled.output(0).get_tensor().set_names({"/head/Mul_output_0", "heatmap"})
    compiled = core.compile_model(ov.Model([doubled], [image]), "CPU")
    assert compiled.outputs[0].get_any_name() == "/head/Mul_output_0"  # the trap

    names = output_names(compiled, {"score", "heatmap"})
    assert names == ["heatmap"]
    out = infer(compiled, {"image": np.ones((1, 4), np.float32)}, names=names)
    assert list(out) == ["heatmap"]
    np.testing.assert_array_equal(out["heatmap"], np.full((1, 4), 2.0, np.float32))
    assert output_names(compiled, {"other"}) == ["/head/Mul_output_0"]
