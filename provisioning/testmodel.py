"""A tiny but real model for tests, benchmarks and demos: a logistic-regression risk score.

``features`` [-1, 8] f32 -> MatMul(weights [8, 1]) -> Add(bias) -> Sigmoid -> ``risk`` [-1, 1],
built with the OpenVINO opset API (no downloads, no training framework) and saved as IR in f32.
The reference set draws features from a seeded ``numpy`` Generator and labels from the same
logistic model (a Bernoulli draw per case), so the model's AUC on it is known (about 0.9); the
manifest claims that AUC rounded down to three decimals, with a tolerance of 0.02.

The same arguments always give byte-identical files: every node is named, the npz is written
with fixed zip timestamps, and nothing depends on the clock or on process state.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import openvino as ov  # type: ignore[import-untyped,unused-ignore]
import openvino.opset13 as ops  # type: ignore[import-untyped,unused-ignore]

from appliance.updates.validate import CASES_FILE, LABELS, auc

FEATURES = 8
# The "true" risk model: one feature is uninformative, so a scrambled model differs visibly.
WEIGHTS = np.array([1.3, -0.9, 0.7, 0.0, 1.1, -0.6, 0.4, 0.8], dtype=np.float32)
BIAS = np.float32(-0.4)
TOLERANCE = 0.02
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest zip date: no clock in the bytes
_PAD_STREAM = 0x9AD  # a second, independent stream of the seed's generator, for padding bytes


def build_model_dir(
    out: Path,
    *,
    name: str = "risk-demo",
    version: str = "1.0.0",
    cases: int = 200,
    seed: int = 7,
    weight_scale: float = 1.0,
    degrade: bool = False,
    size_mb: float | None = None,
    int8: bool = False,
) -> Path:
    """Write ``model.xml``, ``model.bin``, ``manifest.json`` and ``reference/cases.npz`` to ``out``.

    ``weight_scale`` scales the model's weights (other bytes, same ranking, same AUC).
    ``degrade`` sign-flips the weights so the model ranks cases backwards (AUC about 0.1) while the
    manifest still claims the good model's AUC. ``size_mb`` pads model.bin to about that many MiB
    with a constant that feeds the graph but adds exactly zero, so the model still loads and
    validates (OpenVINO folds the padding away when it compiles). ``int8`` quantizes the model
    with NNCF post-training quantization calibrated on the reference features (see
    :func:`quantize`); the manifest still claims the f32 model's AUC. Returns ``out``.
    """
    features, labels = reference_cases(cases, seed)
    weights = WEIGHTS * np.float32(weight_scale) * np.float32(-1.0 if degrade else 1.0)
    pad = _padding(size_mb, seed)
    model = risk_model(weights, BIAS, pad, name=name)
    if int8:
        model = quantize(model, features)
    (out / "reference").mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(out / "model.xml"), compress_to_fp16=False)
    if int8:
        _rename_saved(out / "model.xml")
    (out / CASES_FILE).write_bytes(npz_bytes({"features": features, LABELS: labels}))
    expected = math.floor(auc(_logits(features, WEIGHTS, BIAS), labels) * 1000) / 1000
    doc = manifest_doc(name, version, expected)
    (out / "manifest.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return out


def reference_cases(cases: int, seed: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """``cases`` feature rows (standard normal, f32) and their 0/1 labels drawn from the model."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((cases, FEATURES), dtype=np.float32)
    risk = 1.0 / (1.0 + np.exp(-_logits(features, WEIGHTS, BIAS)))
    labels = (rng.random(cases) < risk).astype(np.int64)
    return features, labels


def risk_model(
    weights: npt.NDArray[np.float32],
    bias: np.float32,
    pad: npt.NDArray[np.float32] | None = None,
    *,
    name: str = "risk-demo",
) -> ov.Model:
    """The risk graph; ``pad`` (if any) enters as ``max(pad) * 0`` added to the bias."""
    features = ops.parameter([-1, FEATURES], ov.Type.f32, name="features")
    w = ops.constant(weights.reshape(FEATURES, 1), name="weights")
    b = ops.constant(np.array([[bias]], dtype=np.float32), name="bias")
    if pad is not None:
        axis = ops.constant(np.array([0], dtype=np.int64), name="pad_axis")
        peak = ops.reduce_max(ops.constant(pad, name="pad", shared_memory=True), axis, True)
        zero = ops.constant(np.zeros(1, dtype=np.float32), name="pad_zero")
        b = ops.add(b, ops.multiply(peak, zero, name="pad_term"), name="padded_bias")
    logit = ops.add(ops.matmul(features, w, False, False, name="logit"), b, name="shifted")
    risk = ops.sigmoid(logit, name="risk")
    risk.output(0).get_tensor().set_names({"risk"})
    # Unnamed nodes get a process-wide counter in their name: that would break byte identity.
    return ov.Model([ops.result(risk, name="risk_result")], [features], name)


def quantize(model: ov.Model, calibration: npt.NDArray[np.float32]) -> ov.Model:
    """``model`` with int8 FakeQuantize on its inputs and int8 weights (NNCF post-training).

    Every calibration row is one sample and all of them are used, so no random subset is drawn and
    the same rows give the same graph. Raises ImportError when NNCF is not installed.
    """
    import nncf  # type: ignore[import-untyped,unused-ignore]  # only the int8 build needs it

    rows = [calibration[i : i + 1] for i in range(len(calibration))]
    return nncf.quantize(
        model,
        nncf.Dataset(rows),
        preset=nncf.QuantizationPreset.MIXED,  # asymmetric activations: tighter ranges
        subset_size=len(rows),
    )


def _rename_saved(xml: Path) -> None:
    """Rewrite the IR at ``xml`` with every counter-named node given a name from its graph place.

    Saving folds the weights' FakeQuantize into i8 constants named by a process-wide counter
    (``Constant_11068``): those become ``int8/<type>_<index in topological order>``.
    """
    # Read from copies in memory: a read from the files would mmap the model.bin it then rewrites.
    weights = np.frombuffer(bytearray(xml.with_suffix(".bin").read_bytes()), dtype=np.uint8)
    core = ov.Core()
    model = core.read_model(xml.read_bytes(), ov.Tensor(weights))
    for index, op in enumerate(model.get_ordered_ops()):
        kind, name = op.get_type_name(), op.get_friendly_name()
        prefix, _, number = name.rpartition("_")
        if prefix == kind and number.isdigit():
            op.set_friendly_name(f"int8/{kind}_{index}")
    ov.save_model(model, str(xml), compress_to_fp16=False)
    del model  # before the core that read it (OpenVINO aborts at exit otherwise)


def manifest_doc(
    name: str, version: str, expected: float, *, features: int = FEATURES,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:  # fmt: skip
    """The manifest of a tabular risk model (see appliance/updates/manifest.py)."""
    return {
        "manifest_version": 1,
        "name": name,
        "version": version,
        "task": "risk-tabular",
        "inputs": [{"name": "features", "shape": [-1, features], "dtype": "f32"}],
        "outputs": [{"name": "risk", "shape": [-1, 1], "dtype": "f32"}],
        "compatibility": {"min_openvino": "2024.0", "devices": ["CPU", "GPU", "NPU"]},
        "reference": {
            "files": [CASES_FILE],
            "metric": "auc",
            "expected": expected,
            "tolerance": tolerance,
        },
    }


def npz_bytes(arrays: dict[str, npt.NDArray[Any]]) -> bytes:
    """An ``.npz`` (uncompressed) of ``arrays`` with fixed timestamps: same arrays, same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for key, array in arrays.items():
            with archive.open(zipfile.ZipInfo(f"{key}.npy", _ZIP_TIME), "w") as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _padding(size_mb: float | None, seed: int) -> npt.NDArray[np.float32] | None:
    if size_mb is None:
        return None
    count = max(1, int(size_mb * (1 << 20)) // 4)
    # Finite values only: max(pad) * 0 must be 0, never NaN.
    return np.random.default_rng((seed, _PAD_STREAM)).random(count, dtype=np.float32)


def _logits(
    features: npt.NDArray[np.float32], weights: npt.NDArray[np.float32], bias: np.float32
) -> npt.NDArray[np.float64]:
    return features.astype(np.float64) @ weights.astype(np.float64) + float(bias)
