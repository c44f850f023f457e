"""The validation gate on the real OpenVINO CPU device: honest, degraded and broken models.

Models come from ``provisioning.testmodel`` (a logistic-regression risk score whose AUC on its
reference set is known). Metric values are recomputed here by other means (pairwise counting,
hand-made confusion matrices) than the gate's own.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import pytest

from appliance.errors import ApplianceError
from appliance.updates.errors import UpdateError
from appliance.updates.manifest import Manifest, Metric, parse_manifest
from appliance.updates.validate import (
    CASES_FILE,
    ValidationError,
    ValidationResult,
    auc,
    compute_metric,
    validate,
)
from provisioning.testmodel import build_model_dir, npz_bytes, reference_cases, risk_model

FILES = ("model.xml", "model.bin", "manifest.json", CASES_FILE)
Bundle = tuple[Manifest, bytes, bytearray, dict[str, bytes]]


@pytest.fixture(scope="module")
def core() -> ov.Core:
    return ov.Core()


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def degraded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model_dir(tmp_path_factory.mktemp("degraded"), version="1.1.0", degrade=True)


def read(folder: Path) -> Bundle:
    manifest = parse_manifest((folder / "manifest.json").read_bytes())
    return (
        manifest,
        (folder / "model.xml").read_bytes(),
        bytearray((folder / "model.bin").read_bytes()),
        {CASES_FILE: (folder / CASES_FILE).read_bytes()},
    )


def pairwise_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUC as the share of (positive, negative) pairs ranked right; a tie counts one half."""
    pos, neg = scores[labels == 1][:, None], scores[labels == 0][None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


# --- honest and degraded models -------------------------------------------------------------


def test_good_model_passes_with_the_independently_computed_auc(core: ov.Core, good: Path) -> None:
    manifest, xml, weights, reference = read(good)
    features, labels = reference_cases(200, 7)
    # Plain OpenVINO from the files, in f32: the CPU's bf16 default ranks differently (0.9090).
    plain = core.compile_model(
        core.read_model(good / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    scores = plain(features)[0][:, 0]

    result = validate(manifest, xml, weights, reference, core=core)

    assert isinstance(result, ValidationResult)
    assert result.passed
    assert result.value == pytest.approx(pairwise_auc(scores, labels), abs=1e-12)
    assert result.value >= manifest.reference.expected
    assert (result.metric, result.cases, result.device) == (Metric.AUC, 200, "CPU")
    assert (result.expected, result.tolerance) == (manifest.reference.expected, 0.02)
    assert 0 < result.seconds < 10
    assert "meets" in result.reason
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.passed = False  # type: ignore[misc]


def test_degraded_model_is_refused_naming_metric_values_and_cases(
    core: ov.Core, degraded: Path
) -> None:
    manifest, xml, weights, reference = read(degraded)
    expected = manifest.reference.expected

    result = validate(manifest, xml, weights, reference, core=core)

    assert not result.passed
    assert result.value < 0.5 < expected - 0.02
    assert result.reason == (
        f"auc {result.value:.3f} on CPU is below the vendor's {expected:.3f} - 0.020 "
        f"({expected - 0.02:.3f}) on 200 reference cases"
    )


def test_progress_counts_cases_up_to_the_total(core: ov.Core, good: Path) -> None:
    seen: list[tuple[int, int]] = []
    validate(*read(good), core=core, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (200, 200)
    assert all(total == 200 for _, total in seen)
    assert [done for done, _ in seen] == sorted({done for done, _ in seen})


def test_model_with_nan_output_fails_the_gate(core: ov.Core, good: Path, tmp_path: Path) -> None:
    weights = np.full(8, np.nan, dtype=np.float32)
    ov.save_model(risk_model(weights, np.float32(0)), str(tmp_path / "m.xml"))
    manifest, _, _, reference = read(good)
    xml, bin_ = (tmp_path / "m.xml").read_bytes(), (tmp_path / "m.bin").read_bytes()

    result = validate(manifest, xml, bin_, reference, core=core)

    assert not result.passed
    assert result.reason.startswith("auc not computed: ")
    assert "NaN or infinite in 200 of 200 reference cases" in result.reason


def test_reason_shows_more_digits_when_three_would_read_equal(core: ov.Core, good: Path) -> None:
    manifest, xml, weights, reference = read(good)
    value = validate(manifest, xml, weights, reference, core=core).value  # 0.90920...
    claim = dataclasses.replace(manifest.reference, expected=round(value + 0.0202, 4))
    strict = dataclasses.replace(manifest, reference=claim)

    result = validate(strict, xml, weights, reference, core=core)

    assert not result.passed
    assert f"auc {value:.4f} on CPU is below" in result.reason
    assert f"({claim.expected - 0.02:.4f})" in result.reason


def test_padded_model_still_loads_and_validates(core: ov.Core, tmp_path: Path) -> None:
    folder = build_model_dir(tmp_path, size_mb=5)
    size = (folder / "model.bin").stat().st_size
    assert abs(size - 5 * 2**20) < 2**10

    result = validate(*read(folder), core=core)

    assert result.passed
    assert result.value >= result.expected


# --- the builder ----------------------------------------------------------------------------


def test_builder_is_deterministic(tmp_path: Path, good: Path) -> None:
    again = build_model_dir(tmp_path / "again")
    for name in FILES:
        assert (again / name).read_bytes() == (good / name).read_bytes(), name


def test_builder_arguments_change_what_they_should(tmp_path: Path, good: Path) -> None:
    scaled = build_model_dir(tmp_path / "scaled", weight_scale=2.0)
    reseeded = build_model_dir(tmp_path / "reseeded", seed=8)
    assert (scaled / "model.bin").read_bytes() != (good / "model.bin").read_bytes()
    assert (scaled / "manifest.json").read_bytes() == (good / "manifest.json").read_bytes()
    assert (reseeded / CASES_FILE).read_bytes() != (good / CASES_FILE).read_bytes()
    assert (reseeded / "model.bin").read_bytes() == (good / "model.bin").read_bytes()


# --- metrics on hand-made arrays ------------------------------------------------------------

SCORES = np.array([0.9, 0.8, 0.3, 0.6, 0.7, 0.1, 0.5])  # 0.5 counts as positive
TRUTH = np.array([1, 1, 1, 0, 0, 0, 0])  # tp 2, fn 1, fp 3, tn 1


@pytest.mark.parametrize(
    ("metric", "value"),
    [
        (Metric.ACCURACY, 3 / 7),
        (Metric.SENSITIVITY, 2 / 3),
        (Metric.RECALL, 2 / 3),
        (Metric.SPECIFICITY, 1 / 4),
        (Metric.PRECISION, 2 / 5),
        (Metric.F1, 4 / 8),
        (Metric.AUC, 9 / 12),
    ],
)
def test_metrics_on_a_known_confusion_matrix(metric: Metric, value: float) -> None:
    assert compute_metric(metric, SCORES[:, None], TRUTH) == pytest.approx(value)


@pytest.mark.parametrize(
    ("scores", "labels", "value"),
    [
        ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),
        ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5),  # all tied
        ([0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1], 0.875),  # one tied pair
        ([0.3, 0.3, 0.7, 0.7], [0, 0, 1, 1], 1.0),  # ties within a class only
        ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], 0.0),
    ],
)
def test_auc_handles_ties(scores: list[float], labels: list[int], value: float) -> None:
    assert auc(np.array(scores), np.array(labels)) == pytest.approx(value)


def test_auc_matches_pairwise_counting_on_heavily_tied_scores() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        scores = rng.integers(0, 4, 60).astype(np.float64)
        labels = np.r_[0, 1, rng.integers(0, 2, 58)]
        assert auc(scores, labels) == pytest.approx(pairwise_auc(scores, labels), abs=1e-12)


def test_two_class_outputs_use_argmax_and_the_score_difference() -> None:
    outputs = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    labels = np.array([0, 0, 1, 1])
    assert compute_metric(Metric.AUC, outputs, labels) == pytest.approx(0.75)
    assert compute_metric(Metric.ACCURACY, outputs, labels) == pytest.approx(0.75)


def test_recall_precision_f1_on_a_tagger_score_any_class_but_zero() -> None:
    """A token tagger (class 0 = not PHI): a PHI token tagged with the wrong PHI class counts
    as found; computed here from a hand-made confusion matrix."""
    outputs = np.eye(4)[[0, 1, 2, 0, 3, 1]]  # argmax classes 0, 1, 2, 0, 3, 1
    labels = np.array([0, 2, 2, 1, 0, 1])  # truth: PHI at cases 1, 2, 3, 5
    # predicted PHI at 1, 2, 4, 5: tp = 3 (1, 2, 5), fp = 1 (4), fn = 1 (3)
    assert compute_metric(Metric.RECALL, outputs, labels) == pytest.approx(3 / 4)
    assert compute_metric(Metric.PRECISION, outputs, labels) == pytest.approx(3 / 4)
    assert compute_metric(Metric.F1, outputs, labels) == pytest.approx(6 / 8)
    with pytest.raises(ValidationError, match="class index"):
        compute_metric(Metric.RECALL, outputs, np.array([0, 2, 2, 1, 0, 4]))
    with pytest.raises(ValidationError, match="no reference case has a class above 0"):
        compute_metric(Metric.F1, outputs, np.zeros(6))


def test_a_tagger_that_calls_nothing_phi_scores_zero_f1() -> None:
    outputs = np.eye(3)[[0, 0, 0, 0]]
    assert compute_metric(Metric.F1, outputs, np.array([0, 1, 2, 0])) == 0.0


def test_accuracy_on_a_multi_class_output_uses_argmax() -> None:
    outputs = np.array([[0.1, 0.7, 0.2], [0.8, 0.1, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    assert compute_metric(Metric.ACCURACY, outputs, np.array([1, 0, 2, 1])) == 0.75
    with pytest.raises(ValidationError, match="class index"):
        compute_metric(Metric.ACCURACY, outputs, np.array([1, 0, 3, 1]))


def test_precision_without_a_positive_call_is_zero() -> None:
    assert compute_metric(Metric.PRECISION, np.zeros((4, 1)), np.array([0, 1, 0, 1])) == 0.0


def test_dice_is_the_mean_over_cases_and_one_when_both_are_empty() -> None:
    outputs = np.array([[[0.9, 0.1], [0.8, 0.2]], [[0.1, 0.2], [0.3, 0.4]]])
    masks = np.array([[[1, 0], [0, 0]], [[0, 0], [0, 0]]])
    assert compute_metric(Metric.DICE, outputs, masks) == pytest.approx((2 / 3 + 1) / 2)
    with pytest.raises(ValidationError, match="dice needs a label mask"):
        compute_metric(Metric.DICE, outputs, masks[:, 0])


@pytest.mark.parametrize(
    ("metric", "outputs", "labels", "message"),
    [
        (Metric.AUC, np.ones((3, 1)), np.array([1, 1, 1]), "no negative case"),
        (Metric.F1, np.ones((3, 1)), np.array([0, 0, 0]), "no positive case"),
        (Metric.SPECIFICITY, np.ones((3, 1)), np.array([1, 1, 1]), "no negative case"),
        (Metric.AUC, np.ones((3, 1)), np.array([0, 1, 2]), "labels of 0 or 1"),
        (Metric.AUC, np.ones((3, 5)), np.array([0, 1, 1]), "one score or two class scores"),
        (Metric.RECALL, np.ones((3, 1)), np.array([[0, 1], [1, 0], [1, 1]]), "one label per case"),
    ],
)
def test_labels_that_do_not_suit_the_metric_are_refused(
    metric: Metric, outputs: np.ndarray, labels: np.ndarray, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        compute_metric(metric, outputs, labels)


# --- bad reference data ---------------------------------------------------------------------

FEATURES, LABELS = reference_cases(20, 3)


def savez(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # allow_pickle is on here: object arrays get pickled
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


BAD_REFERENCES = {
    "missing input": (npz_bytes({"labels": LABELS}), "has no array 'features'"),
    "wrong width": (npz_bytes({"features": FEATURES[:, :7], "labels": LABELS}), r"\(cases, 8\)"),
    "wrong rank": (npz_bytes({"features": FEATURES[:, :, None], "labels": LABELS}), "has shape"),
    "no labels": (npz_bytes({"features": FEATURES}), "has no 'labels' array"),
    "counts differ": (npz_bytes({"features": FEATURES, "labels": LABELS[:-1]}), "features 20, "),
    "no cases": (npz_bytes({"features": FEATURES[:0], "labels": LABELS[:0]}), "non-zero number"),
    "not a zip": (b"case,label\n1,0\n", "not a readable .npz"),
    "single npy": (npy(FEATURES), "not a readable .npz"),
    "pickle": (savez(features=np.array([object()] * 20), labels=LABELS), "pickled Python objects"),
    "text features": (
        npz_bytes({"features": FEATURES.astype(str), "labels": LABELS}),
        "do not convert to the input's f32",
    ),
    "nan labels": (npz_bytes({"features": FEATURES, "labels": LABELS * np.nan}), "finite numbers"),
    "label 2": (npz_bytes({"features": FEATURES, "labels": LABELS + 1}), "labels of 0 or 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_REFERENCES))
def test_bad_reference_data_is_refused_with_a_clear_message(
    core: ov.Core, good: Path, case: str
) -> None:
    data, message = BAD_REFERENCES[case]
    manifest, xml, weights, _ = read(good)
    with pytest.raises(ValidationError, match=message) as caught:
        validate(manifest, xml, weights, {CASES_FILE: data}, core=core)
    assert isinstance(caught.value, UpdateError)
    assert isinstance(caught.value, ApplianceError)
    assert caught.value.hint is not None


def test_reference_set_without_cases_file_is_refused(core: ov.Core, good: Path) -> None:
    manifest, xml, weights, _ = read(good)
    with pytest.raises(ValidationError, match="has no reference/cases.npz"):
        validate(manifest, xml, weights, {"reference/other.npz": b""}, core=core)


def test_labels_are_checked_before_the_model_is_loaded(core: ov.Core, good: Path) -> None:
    manifest = read(good)[0]
    one_class = npz_bytes({"features": FEATURES, "labels": np.zeros(20)})
    with pytest.raises(ValidationError, match="no positive case"):
        validate(manifest, b"not a model", b"", {CASES_FILE: one_class}, core=core)


def test_float64_features_are_accepted_for_an_f32_input(core: ov.Core, good: Path) -> None:
    manifest, xml, weights, _ = read(good)
    features, labels = reference_cases(200, 7)
    data = npz_bytes({"features": features.astype(np.float64), "labels": labels.astype(float)})
    result = validate(manifest, xml, weights, {CASES_FILE: data}, core=core)
    assert result.passed
