"""The validation gate: run the vendor's reference set through the model on this box's device.

A new model is committed only when it scores, here and now, at least what its vendor claims
minus the tolerance (``manifest.reference``): the same bundle on another OpenVINO release or
device, or a damaged or mislabelled model, is caught before a clinician sees its output.

Reference set format: one file, ``reference/cases.npz``, listed in ``reference.files``. It is a
NumPy ``.npz`` archive of plain arrays (no pickled objects: they are refused) holding

* one array per model input, named after the manifest's input name; the first axis is the case,
  the rest is the input's shape without its batch axis (``features`` of ``[-1, 8]`` is stored as
  ``(cases, 8)``); values must cast to the input's dtype without changing kind (float64 data for
  an f32 input is fine, float data for an integer input is not);
* ``labels``, one row per case: 0/1 for auc, f1, sensitivity, specificity, precision and recall;
  a class index for accuracy on a multi-class model (0/1 on a single-score model); a 0/1 mask
  with as many values per case as the model's output for dice.

The metric is computed on the manifest's first output. A single value per case is the probability
of the positive class (thresholded at 0.5; auc uses it as is); two values per case are two class
scores (argmax; auc ranks by their difference); more are classes (argmax): accuracy scores the
class, and recall, sensitivity, precision and f1 score "any class but 0" against labels that are
class indices (a token tagger: class 0 is "not PHI", every other class is some kind of PHI).
Dice is the mean over cases of 2|P∩T| / (|P|+|T|), P = output >= 0.5, and 1 where both are empty.

Bad reference data raises :class:`ValidationError`; a model that cannot be read, compiled or run
raises ``InferenceError``; a model that runs but scores too low (or outputs NaN) is a
``ValidationResult`` with ``passed=False``.
"""

from __future__ import annotations

import io
import math
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import openvino as ov  # type: ignore[import-untyped,unused-ignore]

from appliance.inference.engine import compile, load_model, run_cases
from appliance.updates.errors import UpdateError
from appliance.updates.manifest import DType, Manifest, Metric

CASES_FILE = "reference/cases.npz"
LABELS = "labels"
# Bounds the memory the gate may spend on reference arrays: the declared sizes inside the zip are
# checked before anything is inflated, so a small compressed file cannot expand to fill the RAM.
MAX_REFERENCE_BYTES = 2 << 30
_HINT = (
    "Ask the vendor for a bundle with a valid reference set (see appliance/updates/validate.py)."
)
THRESHOLD = 0.5  # a single score per case is a probability: positive from 0.5 up
_TWO_CLASSES = 2
_MAX_DIGITS = 6
_BINARY = frozenset(
    {Metric.AUC, Metric.F1, Metric.SENSITIVITY, Metric.SPECIFICITY, Metric.PRECISION, Metric.RECALL}
)
# On a model with more than two classes these score "any class but 0" (see the module docstring).
_ANY_CLASS = frozenset({Metric.F1, Metric.SENSITIVITY, Metric.PRECISION, Metric.RECALL})
_DTYPES = {
    DType.F32: np.float32,
    DType.F16: np.float16,
    DType.I64: np.int64,
    DType.I32: np.int32,
    DType.I16: np.int16,
    DType.I8: np.int8,
    DType.U64: np.uint64,
    DType.U32: np.uint32,
    DType.U16: np.uint16,
    DType.U8: np.uint8,
    DType.BOOLEAN: np.bool_,
}
Array = npt.NDArray[Any]


class ValidationError(UpdateError):
    """The bundle's reference set is missing, unreadable, or does not fit the manifest."""


@dataclass(frozen=True)
class ValidationResult:
    """What the gate measured and decided; ``reason`` is one line for the console and audit."""

    metric: Metric
    value: float
    expected: float
    tolerance: float
    passed: bool
    cases: int
    device: str
    seconds: float
    reason: str
    precision: str = ""  # the compiled model's inference precision (int8 IRs: outside int8 layers)

    @property
    def threshold(self) -> float:
        return self.expected - self.tolerance


@dataclass(frozen=True)
class ReferenceCases:
    """The reference set, checked against the manifest: model inputs and labels per case."""

    inputs: Mapping[str, Array]
    labels: Array

    @property
    def count(self) -> int:
        return len(self.labels)


def validate(
    manifest: Manifest,
    xml: bytes,
    weights: bytes | bytearray,
    reference: Mapping[str, bytes],
    *,
    core: ov.Core,
    device: str = "CPU",
    progress: Callable[[int, int], None] | None = None,
) -> ValidationResult:
    """Run the reference set through the model on ``device`` and judge it against the manifest.

    ``reference`` maps the manifest's reference file names (``reference/cases.npz``) to their
    bytes. ``weights`` is shared with OpenVINO while the gate runs (see ``load_model``).
    ``progress(done, total)`` reports cases. Raises ValidationError for bad reference data and
    InferenceError when the model cannot be read, compiled or run.
    """
    started = time.monotonic()
    cases = read_reference(manifest, reference)
    # Compiled as the registry serves it: an int8 IR without the f32 hint (engine.compile).
    compiled = compile(load_model(xml, weights, core=core), device, core=core, latency=False)
    output = run_cases(compiled, cases.inputs, manifest.outputs[0].name, progress=progress)
    ref = manifest.reference
    value, reason = _judge(manifest, output, cases, device)
    return ValidationResult(
        metric=ref.metric,
        value=value,
        expected=ref.expected,
        tolerance=ref.tolerance,
        passed=_passes(value, ref.expected, ref.tolerance),
        cases=cases.count,
        device=device,
        seconds=time.monotonic() - started,
        reason=reason,
        precision=compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
    )


def read_reference(manifest: Manifest, reference: Mapping[str, bytes]) -> ReferenceCases:
    """Read ``reference/cases.npz`` and check it against the manifest; raise ValidationError."""
    if CASES_FILE not in manifest.reference.files or CASES_FILE not in reference:
        raise ValidationError(f"the bundle's reference set has no {CASES_FILE}.", _HINT)
    arrays = _load_npz(reference[CASES_FILE])
    inputs = {s.name: _input_array(arrays, s.name, s.shape, s.dtype) for s in manifest.inputs}
    if LABELS not in arrays:
        raise ValidationError(f"{CASES_FILE} has no '{LABELS}' array.", _HINT)
    labels = arrays[LABELS]
    counts = {name: len(a) for name, a in inputs.items()} | {LABELS: len(labels)}
    if len(set(counts.values())) != 1 or labels.ndim == 0 or not len(labels):
        listed = ", ".join(f"{name} {n}" for name, n in counts.items())
        raise ValidationError(
            f"the arrays of {CASES_FILE} must hold the same, non-zero number of cases "
            f"(first axis); they hold {listed}.",
            _HINT,
        )
    if labels.dtype.kind not in "biuf" or not np.isfinite(labels).all():
        raise ValidationError(f"'{LABELS}' in {CASES_FILE} must be finite numbers.", _HINT)
    metric, columns = manifest.reference.metric, math.prod(manifest.outputs[0].shape[1:])
    if metric in _BINARY and not (metric in _ANY_CLASS and columns > _TWO_CLASSES):
        _binary_labels(labels, metric)  # refuse before the model even loads
    return ReferenceCases(inputs, labels)


def _load_npz(data: bytes) -> dict[str, Array]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
        if inflated > MAX_REFERENCE_BYTES:
            raise ValidationError(
                f"{CASES_FILE} inflates to {inflated} bytes, over {MAX_REFERENCE_BYTES}.", _HINT
            )
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {str(name): np.asarray(npz[name]) for name in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise ValidationError(
                f"{CASES_FILE} holds pickled Python objects; the gate refuses them because "
                "unpickling can run code.",
                _HINT,
            ) from exc
        raise ValidationError(f"{CASES_FILE} is not a readable .npz: {exc}.", _HINT) from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValidationError(
            f"{CASES_FILE} is not a readable .npz archive: {exc}.", _HINT
        ) from exc


def _input_array(
    arrays: Mapping[str, Array], name: str, shape: tuple[int, ...], dtype: DType
) -> Array:
    if name not in arrays:
        held = ", ".join(sorted(arrays)) or "nothing"
        raise ValidationError(
            f"{CASES_FILE} has no array '{name}' for the model input '{name}' (it holds {held}).",
            _HINT,
        )
    array = arrays[name]
    want = ", ".join("any" if d == -1 else str(d) for d in shape[1:])
    case_shape = array.shape[1:]
    if array.ndim != len(shape) or any(
        d not in (-1, h) for d, h in zip(shape[1:], case_shape, strict=True)
    ):
        raise ValidationError(
            f"array '{name}' in {CASES_FILE} has shape {array.shape}; the manifest's input "
            f"{shape} needs (cases, {want}).",
            _HINT,
        )
    target = _DTYPES.get(dtype)
    if target is None or not np.can_cast(array.dtype, target, casting="same_kind"):
        raise ValidationError(
            f"array '{name}' in {CASES_FILE} holds {array.dtype} values, which do not convert "
            f"to the input's {dtype.value}.",
            _HINT,
        )
    return np.ascontiguousarray(array, dtype=target)


# --- metrics (numpy only) --------------------------------------------------------------------


def compute_metric(metric: Metric, outputs: Array, labels: Array) -> float:
    """``metric`` of model ``outputs`` (first axis = case) against ``labels``; see the docstring.

    Raises ValidationError when the labels or the output's shape do not suit the metric.
    """
    if metric is Metric.DICE:
        return dice(outputs, labels)
    columns = outputs.reshape(len(outputs), -1).astype(np.float64)
    if metric is Metric.ACCURACY and columns.shape[1] > _TWO_CLASSES:
        return float(np.mean(columns.argmax(axis=1) == _class_labels(labels, columns.shape[1])))
    if metric in _ANY_CLASS and columns.shape[1] > _TWO_CLASSES:
        truth = _class_labels(labels, columns.shape[1], metric) != 0
        if not truth.any():
            raise ValidationError(
                f"{metric} is undefined: no reference case has a class above 0.", _HINT
            )
        return _from_confusion(metric, columns.argmax(axis=1) != 0, truth)
    if columns.shape[1] not in (1, 2):
        raise ValidationError(
            f"{metric} needs one score or two class scores per case; the model's output has "
            f"{columns.shape[1]} values per case.",
            _HINT,
        )
    truth = _binary_labels(labels, metric)
    if metric is Metric.AUC:
        return auc(columns[:, 0] if columns.shape[1] == 1 else columns[:, 1] - columns[:, 0], truth)
    single = columns.shape[1] == 1
    predicted = columns[:, 0] >= THRESHOLD if single else columns.argmax(axis=1) == 1
    return _from_confusion(metric, predicted, truth)


def auc(scores: Array, truth: Array) -> float:
    """Area under the ROC curve by the Mann-Whitney U statistic; tied scores count one half."""
    positive = np.asarray(truth, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if not n_pos or not n_neg:
        raise ValidationError("auc needs both positive and negative reference cases.", _HINT)
    _, index, counts = np.unique(scores, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    ranks = ((last - counts + 1 + last) / 2.0)[index.ravel()]  # 1-based; ties get the average
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def dice(outputs: Array, labels: Array) -> float:
    """Mean per-case Dice of ``outputs >= 0.5`` against the 0/1 mask ``labels``."""
    n = len(outputs)
    if labels.size != outputs.size or len(labels) != n:
        raise ValidationError(
            f"dice needs a label mask per case of the output's size ({outputs.shape[1:]}); the "
            f"labels have shape {labels.shape}.",
            _HINT,
        )
    predicted = outputs.reshape(n, -1) >= THRESHOLD
    truth = _binary_labels(labels, Metric.DICE).reshape(n, -1)
    overlap = (predicted & truth).sum(axis=1)
    sizes = predicted.sum(axis=1) + truth.sum(axis=1)
    per_case = np.where(sizes == 0, 1.0, 2.0 * overlap / np.maximum(sizes, 1))
    return float(per_case.mean())


def _from_confusion(metric: Metric, predicted: Array, truth: Array) -> float:
    tp = int((predicted & truth).sum())
    fp = int((predicted & ~truth).sum())
    fn = int((~predicted & truth).sum())
    tn = int((~predicted & ~truth).sum())
    if metric is Metric.ACCURACY:
        return (tp + tn) / len(truth)
    if metric is Metric.SPECIFICITY:
        return tn / (tn + fp)
    if metric in (Metric.SENSITIVITY, Metric.RECALL):
        return tp / (tp + fn)
    if metric is Metric.PRECISION:
        return tp / (tp + fp) if tp + fp else 0.0  # no positive call: nothing was right
    return 2 * tp / (2 * tp + fp + fn)  # f1


def _binary_labels(labels: Array, metric: Metric) -> Array:
    if metric is not Metric.DICE and labels.size != len(labels):
        raise ValidationError(f"{metric} needs one label per case; got {labels.shape}.", _HINT)
    if not np.isin(labels, (0, 1)).all():
        raise ValidationError(f"{metric} needs labels of 0 or 1 in {CASES_FILE}.", _HINT)
    truth = labels.astype(bool).ravel() if metric is not Metric.DICE else labels.astype(bool)
    need_pos = metric in _BINARY and metric is not Metric.SPECIFICITY
    need_neg = metric in (Metric.AUC, Metric.SPECIFICITY)
    if (need_pos and not truth.any()) or (need_neg and truth.all()):
        missing = "positive" if need_pos and not truth.any() else "negative"
        raise ValidationError(
            f"{metric} is undefined: the reference labels have no {missing} case.", _HINT
        )
    return truth


def _class_labels(labels: Array, classes: int, metric: Metric = Metric.ACCURACY) -> Array:
    flat = labels.ravel()
    if len(flat) != len(labels) or not np.isin(flat, np.arange(classes)).all():
        raise ValidationError(
            f"{metric} needs one class index (0..{classes - 1}) per case in '{LABELS}'.", _HINT
        )
    return flat.astype(np.int64)


# --- the decision ----------------------------------------------------------------------------


def _judge(
    manifest: Manifest, output: Array, cases: ReferenceCases, device: str
) -> tuple[float, str]:
    ref, n = manifest.reference, cases.count
    finite = np.isfinite(output.reshape(n, -1)).all(axis=1)
    if not finite.all():
        return math.nan, (
            f"{ref.metric} not computed: the model's output {manifest.outputs[0].name} on "
            f"{device} is NaN or infinite in {int((~finite).sum())} of {n} reference cases"
        )
    value = compute_metric(ref.metric, output, cases.labels)
    return value, _reason(ref.metric, value, ref.expected, ref.tolerance, n, device)


def _passes(value: float, expected: float, tolerance: float) -> bool:
    # 1e-9 absorbs float rounding in "expected - tolerance" (0.91 - 0.02 = 0.8900000000000001).
    return not math.isnan(value) and value >= expected - tolerance - 1e-9


def _reason(
    metric: Metric, value: float, expected: float, tolerance: float, n: int, dev: str
) -> str:
    threshold = expected - tolerance
    digits = 3
    while digits < _MAX_DIGITS and f"{value:.{digits}f}" == f"{threshold:.{digits}f}":
        digits += 1  # never print "0.890 is below 0.890"
    verdict = "meets" if _passes(value, expected, tolerance) else "is below"
    return (
        f"{metric} {value:.{digits}f} on {dev} {verdict} the vendor's {expected:.3f} - "
        f"{tolerance:.3f} ({threshold:.{digits}f}) on {n} reference cases"
    )
