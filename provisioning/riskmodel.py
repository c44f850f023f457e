"""The breast-cancer malignancy risk model: data, training, export, metrics (vendor side).

Data: the Wisconsin Diagnostic Breast Cancer set (569 fine-needle aspirates, 30 nuclear features,
212 malignant) that scikit-learn ships inside its wheel, so nothing is downloaded. A stratified
30% is held out on a fixed seed; the rest trains standardisation + L2 logistic regression, its
strength chosen by 5-fold cross-validated log loss (a proper scoring rule, so the choice favours
calibrated probabilities, not just ranking).

Export: the fitted parameters are rounded to f32 (the precision the graphs carry) and put back into
the scikit-learn pipeline, so the pipeline, the OpenVINO IR and the ONNX file hold identical
weights and the parity figure measures inference arithmetic only. Both graphs are
``(x - mean) / scale -> MatMul(coef) -> Add(intercept) -> Sigmoid`` in standard ops, written with
the OpenVINO opset API and the onnx helper API (skl2onnx's ``ai.onnx.ml`` ops do not convert to
OpenVINO). Everything is a function of the seed: :func:`build` rebuilds the same bytes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import openvino as ov  # type: ignore[import-untyped,unused-ignore]
import openvino.opset13 as ops  # type: ignore[import-untyped,unused-ignore]

from appliance.inference.engine import compile, load_model, run_cases
from appliance.updates.validate import CASES_FILE, LABELS, auc
from provisioning.testmodel import manifest_doc, npz_bytes

NAME, VERSION = "breast-cancer-risk", "1.0.0"
SEED = 20170
HELD_OUT = 0.3
FOLDS = 5
STRENGTHS = tuple(float(c) for c in np.logspace(-3, 2, 11))  # inverse L2 strengths tried by CV
FEATURES = 30
INPUT, OUTPUT = "features", "risk"
TOLERANCE = 0.01
BIN_EDGES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
PARITY_LIMIT = 1e-6
ONNX_OPSET, ONNX_IR = 13, 8
BUILT_FILES = ("model.xml", "model.bin", "model.onnx", "manifest.json", CASES_FILE, "CARD.md")
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Split:
    """Features as f32 (what the box receives), labels 1 = malignant."""

    x_train: F32
    y_train: I64
    x_test: F32
    y_test: I64
    feature_names: tuple[str, ...]


@dataclass(frozen=True)
class Fitted:
    """The trained pipeline and its parameters, every one exactly representable in f32."""

    pipeline: Any  # sklearn Pipeline(StandardScaler, LogisticRegression)
    exact: Any  # the same before its parameters were rounded to f32
    mean: F32
    scale: F32
    coef: F32
    intercept: F32
    strength: float

    def predict(self, x: F32) -> F64:
        """scikit-learn's malignancy probability (``predict_proba[:, 1]``) in float64."""
        return np.asarray(self.pipeline.predict_proba(x.astype(np.float64))[:, 1], np.float64)


@dataclass(frozen=True)
class Bin:
    low: float
    high: float
    cases: int
    mean_predicted: float
    observed: float


@dataclass(frozen=True)
class Metrics:
    """Held-out figures of one runtime's outputs (the card reports OpenVINO's)."""

    cases: int
    malignant: int
    auc: float
    brier: float
    reliability: tuple[Bin, ...]
    parity: float  # max |runtime - scikit-learn| over the held-out cases


def load_split() -> Split:
    """The shipped data set, split on the fixed seed (stratified by diagnosis)."""
    from sklearn.datasets import load_breast_cancer  # type: ignore[import-untyped]
    from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]

    data = load_breast_cancer()
    x = np.asarray(data.data, dtype=np.float32)
    y = (np.asarray(data.target) == 0).astype(np.int64)  # scikit-learn codes malignant as 0
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=HELD_OUT, stratify=y, random_state=SEED
    )
    return Split(x_tr, y_tr, x_te, y_te, tuple(str(n) for n in data.feature_names))


def fit(split: Split) -> Fitted:
    """Train on the training part; one BLAS thread so the sums run in one order every time."""
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline  # type: ignore[import-untyped]
    from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=SEED)
    candidate = make_pipeline(StandardScaler(), LogisticRegression(max_iter=10_000, tol=1e-10))
    search = GridSearchCV(candidate, {"logisticregression__C": list(STRENGTHS)}, cv=folds,
                          scoring="neg_log_loss")  # fmt: skip
    with threadpool_limits(limits=1):
        search.fit(split.x_train.astype(np.float64), split.y_train)
    pipeline = search.best_estimator_  # refitted on the whole training part
    exact = copy.deepcopy(pipeline)
    scaler, lr = pipeline[0], pipeline[-1]
    # Round to f32 and put back: the pipeline then holds exactly what the graphs hold.
    for obj, attr in ((scaler, "mean_"), (scaler, "scale_"), (lr, "coef_"), (lr, "intercept_")):
        setattr(obj, attr, getattr(obj, attr).astype(np.float32).astype(np.float64))
    return Fitted(
        pipeline=pipeline,
        exact=exact,
        mean=scaler.mean_.astype(np.float32),
        scale=scaler.scale_.astype(np.float32),
        coef=lr.coef_.reshape(-1).astype(np.float32),
        intercept=lr.intercept_.reshape(-1).astype(np.float32),
        strength=float(lr.C),
    )


def openvino_model(f: Fitted) -> ov.Model:
    """The pipeline as an OpenVINO graph of standard ops; every node named (byte identity)."""
    x = ops.parameter([-1, FEATURES], ov.Type.f32, name=INPUT)
    centred = ops.subtract(x, ops.constant(f.mean.reshape(1, -1), name="mean"), name="centred")
    z = ops.divide(centred, ops.constant(f.scale.reshape(1, -1), name="scale"), name="standard")
    dot = ops.matmul(z, ops.constant(f.coef.reshape(-1, 1), name="coef"), False, False,
                     name="dot")  # fmt: skip
    logit = ops.add(dot, ops.constant(f.intercept.reshape(1, 1), name="intercept"), name="logit")
    risk = ops.sigmoid(logit, name=OUTPUT)
    risk.output(0).get_tensor().set_names({OUTPUT})
    return ov.Model([ops.result(risk, name="risk_result")], [x], NAME)


def onnx_model(f: Fitted) -> bytes:
    """The same graph and weights as ONNX (default domain only), serialised deterministically."""
    import onnx  # type: ignore[import-untyped,unused-ignore]
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Sub", [INPUT, "mean"], ["centred"], name="centred"),
        helper.make_node("Div", ["centred", "scale"], ["standard"], name="standard"),
        helper.make_node("MatMul", ["standard", "coef"], ["dot"], name="dot"),
        helper.make_node("Add", ["dot", "intercept"], ["logit"], name="logit"),
        helper.make_node("Sigmoid", ["logit"], [OUTPUT], name=OUTPUT),
    ]
    weights = [
        numpy_helper.from_array(f.mean.reshape(1, -1), "mean"),
        numpy_helper.from_array(f.scale.reshape(1, -1), "scale"),
        numpy_helper.from_array(f.coef.reshape(-1, 1), "coef"),
        numpy_helper.from_array(f.intercept.reshape(1, 1), "intercept"),
    ]
    graph = helper.make_graph(
        nodes, NAME,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 1])],
        initializer=weights,
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], ir_version=ONNX_IR,
        producer_name="clinical-appliance models/breast-cancer-risk", producer_version=VERSION,
    )  # fmt: skip
    onnx.checker.check_model(model, full_check=True)
    data: bytes = model.SerializeToString(deterministic=True)
    return data


def openvino_risk(xml: bytes, weights: bytes, x: F32, core: ov.Core) -> F64:
    """Run ``x`` through the IR on the CPU with the box's engine (f32 inference hint)."""
    compiled = compile(load_model(xml, bytearray(weights), core=core), "CPU", core=core,
                       latency=False)  # fmt: skip
    return run_cases(compiled, {INPUT: x}, OUTPUT).reshape(-1).astype(np.float64)


def onnxruntime_risk(model: bytes, x: F32) -> F64:
    """Run ``x`` through the ONNX file with onnxruntime on the CPU (two threads at most)."""
    import onnxruntime as ort  # type: ignore[import-untyped,unused-ignore]

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    out = session.run([OUTPUT], {INPUT: x})[0]
    return np.asarray(out, dtype=np.float64).reshape(-1)


def brier(p: F64, y: I64) -> float:
    """Mean squared difference between the probability and the 0/1 outcome."""
    return float(np.mean((p - y) ** 2))


def reliability(p: F64, y: I64, edges: Sequence[float] = BIN_EDGES) -> tuple[Bin, ...]:
    """Cases per predicted-probability bin (the last bin includes 1.0), mean p and observed rate."""
    index = np.clip(np.searchsorted(np.asarray(edges), p, side="right") - 1, 0, len(edges) - 2)
    bins = []
    for i in range(len(edges) - 1):
        inside = index == i
        n = int(inside.sum())
        mean_p = float(p[inside].mean()) if n else math.nan
        observed = float(y[inside].mean()) if n else math.nan
        bins.append(Bin(edges[i], edges[i + 1], n, mean_p, observed))
    return tuple(bins)


def measure(p: F64, y: I64, reference: F64) -> Metrics:
    """The card's figures for outputs ``p``: labels ``y``, scikit-learn's outputs ``reference``."""
    return Metrics(
        cases=len(y), malignant=int(y.sum()), auc=auc(p, y), brier=brier(p, y),
        reliability=reliability(p, y), parity=float(np.max(np.abs(p - reference))),
    )  # fmt: skip


def sha256sums(folder: Path, names: Sequence[str]) -> str:
    """``sha256sum``-format lines (``sha256sum -c SHA256SUMS`` checks them), sorted by name."""
    lines = [f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}" for n in sorted(names)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Built:
    fitted: Fitted
    split: Split
    openvino: Metrics
    onnxruntime: Metrics
    sklearn: Metrics
    rounding: float  # max change of a held-out probability from rounding the parameters to f32


def build(out: Path, core: ov.Core | None = None) -> Built:
    """Train, export and measure; write every file of the model folder into ``out``.

    Raises AssertionError when OpenVINO or onnxruntime differ from scikit-learn by more than
    1e-6 on a held-out case: such a model must not be written.
    """
    from provisioning.riskcard import card_text

    core = core or ov.Core()
    split = load_split()
    fitted = fit(split)
    x64 = split.x_test.astype(np.float64)
    unrounded = float(
        np.max(np.abs(fitted.exact.predict_proba(x64)[:, 1] - fitted.predict(split.x_test)))
    )
    (out / "reference").mkdir(parents=True, exist_ok=True)
    ov.save_model(openvino_model(fitted), str(out / "model.xml"), compress_to_fp16=False)
    onnx_bytes = onnx_model(fitted)
    (out / "model.onnx").write_bytes(onnx_bytes)
    cases = npz_bytes({INPUT: split.x_test, LABELS: split.y_test})
    (out / CASES_FILE).write_bytes(cases)
    sk = fitted.predict(split.x_test)
    xml, weights = (out / "model.xml").read_bytes(), (out / "model.bin").read_bytes()
    ov_p = openvino_risk(xml, weights, split.x_test, core)
    ort_p = onnxruntime_risk(onnx_bytes, split.x_test)
    built = Built(fitted, split, measure(ov_p, split.y_test, sk), measure(ort_p, split.y_test, sk),
                  measure(sk, split.y_test, sk), unrounded)  # fmt: skip
    for runtime, m in (("OpenVINO", built.openvino), ("onnxruntime", built.onnxruntime)):
        if m.parity > PARITY_LIMIT:
            raise AssertionError(f"{runtime} differs from scikit-learn by {m.parity:.3g}")
    expected = math.floor(built.openvino.auc * 1000) / 1000
    manifest = manifest_doc(NAME, VERSION, expected, features=FEATURES, tolerance=TOLERANCE)
    doc = json.dumps(manifest, indent=2) + "\n"
    (out / "manifest.json").write_text(doc, encoding="utf-8")
    (out / "CARD.md").write_text(card_text(built), encoding="utf-8")
    (out / "SHA256SUMS").write_text(sha256sums(out, BUILT_FILES), encoding="utf-8")
    return built
