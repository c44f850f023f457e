"""The committed imaging anomaly model: rebuilt byte for byte, its card re-measured on OpenVINO CPU.

The card's numbers come from ``metrics.json``; here they are measured again on the committed IRs
(``f32/model.xml`` with the f32 precision hint, and ``model.xml``, the INT8 IR the box serves, as
the box compiles it), on the same seeded held-out and seen sets rebuilt from package data. Then
the folder goes through the box's own path: a vendor-signed bundle installed by the update agent
on a real swtpm, validated by the gate.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import pytest
from threadpoolctl import threadpool_limits

from appliance.updates.manifest import parse_manifest
from appliance.updates.validate import CASES_FILE, validate

from . import cpuclass
from .imaging import FOLDER, recipe_module
from .metricsdoc import flat

F32 = {"INFERENCE_PRECISION_HINT": "f32"}
SAME = 0.002  # OpenVINO's thread split may move a score in the 7th digit; an AUC hardly ever
IR_LIMIT = 5 << 20

pytest.importorskip("nibabel", reason="nibabel (test extra) holds part of the imaging data")
if not Path("/usr/share/mricron/templates/ch2.nii.gz").is_file():
    pytest.skip("Debian's mricron-data is not installed (make deps)", allow_module_level=True)


@pytest.fixture(scope="module")
def metrics() -> dict[str, Any]:
    return json.loads((FOLDER / "metrics.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def core() -> ov.Core:
    # One Core for the module, outliving every model compiled from it: OpenVINO aborts the
    # process when a Core goes away under a worker thread that still runs.
    return ov.Core()


@pytest.fixture(scope="module")
def measured(core: ov.Core) -> Iterator[dict[str, Any]]:
    """The card's metrics measured now: OpenVINO f32 and INT8 on held-out, f32 on seen."""
    evaluation = recipe_module("imaging_eval")
    f32 = core.compile_model(str(FOLDER / "f32" / "model.xml"), "CPU", F32)
    int8 = core.compile_model(str(FOLDER / "model.xml"), "CPU")
    with threadpool_limits(1):  # the resampling is faster on one BLAS thread on two cores
        held, seen = evaluation.evaluation_set(True), evaluation.evaluation_set(False)
    out: dict[str, Any] = {}
    for name, compiled in (("openvino_f32", f32), ("openvino_int8", int8)):
        scores, heat = evaluation.run_batched(
            lambda x, c=compiled: tuple(c(x).values()), held.images
        )
        out[name] = evaluation.metrics(scores, heat, held)
    scores, heat = evaluation.run_batched(lambda x, c=f32: tuple(c(x).values()), seen.images)
    out["seen"] = evaluation.metrics(scores, heat, seen)
    yield out
    del f32, int8


def test_committed_files_match_their_recorded_hashes() -> None:
    for line in (FOLDER / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        assert hashlib.sha256((FOLDER / name).read_bytes()).hexdigest() == digest, name


def test_committed_irs_are_small_the_served_one_int8_the_other_f32() -> None:
    xml = (FOLDER / "f32" / "model.xml").read_text()
    assert 'element_type="f16"' not in xml and 'element_type="bf16"' not in xml
    assert "FakeQuantize" not in xml
    assert (FOLDER / "f32" / "model.bin").stat().st_size + len(xml) < IR_LIMIT
    served = (FOLDER / "model.xml").read_text()
    assert 'element_type="i8"' in served or "FakeQuantize" in served
    assert (FOLDER / "model.bin").stat().st_size + len(served) < IR_LIMIT


# What the measurements write; the rest is the model (weights, graphs, reference set).
MEASURED = ("metrics.json", "manifest.json", "CARD.md")
# INT8 and default-precision figures measured on another class of CPU (cpuclass.py): its int8
# kernels round otherwise, which moves an AUC in the third decimal (seen: 0.0032 on one scanner).
CROSS_CPU = 0.01


def _sums(folder: Path) -> dict[str, str]:
    lines = (folder / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split("  ", 1) for line in lines)}


@pytest.mark.timeout(3600)
def test_recipe_rebuilds_every_committed_file_byte_for_byte(tmp_path: Path) -> None:
    if not cpuclass.same_class():
        pytest.skip(f"{cpuclass.why_not()}: training here makes another net (the recipe's "
                    "export, quantisation and measurement are checked here from the committed "
                    "weights)")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "OPENBLAS_NUM"))}
    subprocess.run(
        [sys.executable, os.fspath(FOLDER / "build.py"), os.fspath(tmp_path)],
        check=True,
        env=env,
        capture_output=True,
    )
    assert (tmp_path / "SHA256SUMS").read_text() == (FOLDER / "SHA256SUMS").read_text()


@pytest.mark.timeout(900)
def test_recipe_rebuilds_the_rest_from_the_committed_weights(tmp_path: Path) -> None:
    """``build.py --from-weights``: export, quantisation and measurement alone (a minute)."""
    (tmp_path / "torch").mkdir()
    shutil.copy(FOLDER / "torch" / "state_dict.npz", tmp_path / "torch")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "OPENBLAS_NUM"))}
    subprocess.run(
        [sys.executable, os.fspath(FOLDER / "build.py"), os.fspath(tmp_path), "--from-weights"],
        check=True,
        env=env,
        capture_output=True,
    )
    if cpuclass.same_class():
        assert (tmp_path / "SHA256SUMS").read_text() == (FOLDER / "SHA256SUMS").read_text()
        return
    # Another class of CPU: the model's files are the same bytes; its measured figures agree,
    # f32 as closely as on the build machine, INT8 and the default precision within CROSS_CPU.
    now, then = _sums(tmp_path), _sums(FOLDER)
    assert {k: v for k, v in now.items() if k not in MEASURED} == {
        k: v for k, v in then.items() if k not in MEASURED
    }
    rebuilt = json.loads((tmp_path / "metrics.json").read_text())
    committed = json.loads((FOLDER / "metrics.json").read_text())
    for part in ("held_out", "seen"):
        for runtime, claim in committed[part].items():
            close = SAME if runtime in ("openvino_f32", "onnxruntime_fp32", "torch_fp32") else (
                CROSS_CPU)  # fmt: skip
            measured_now = flat(rebuilt[part][runtime])
            for key, value in flat(claim).items():
                assert measured_now[key] == pytest.approx(value, abs=close), (part, runtime, key)


def test_card_metrics_are_re_measured_on_the_committed_ir(
    metrics: dict[str, Any], measured: dict[str, Any]
) -> None:
    claims = {
        "openvino_f32": metrics["held_out"]["openvino_f32"],
        "openvino_int8": metrics["held_out"]["openvino_int8"],
        "seen": metrics["seen"]["openvino_f32"],
    }
    for name, claim in claims.items():
        now, then = flat(measured[name]), flat(claim)
        assert now.keys() == then.keys()
        close = CROSS_CPU if name == "openvino_int8" and not cpuclass.same_class() else SAME
        for key, value in then.items():
            assert now[key] == pytest.approx(value, abs=close), f"{name} {key}"
    card = (FOLDER / "CARD.md").read_text()
    assert f"**{metrics['held_out']['openvino_f32']['auc_goal']:.4f}**" in card
    assert "not a clinical detector" in card


@pytest.mark.xfail(
    strict=True,
    reason="issue 8's goal is not met yet: the committed model reaches AUC about 0.75 on held-out "
    "scanners at contrast >= 0.15 (CARD.md); strict, so a model that meets it turns this red "
    "until the mark goes",
)
def test_held_out_scanners_reach_the_goal_auc(measured: dict[str, Any]) -> None:
    assert measured["openvino_f32"]["auc_goal"] >= 0.90


def test_int8_is_within_0_01_auc_of_f32(measured: dict[str, Any]) -> None:
    f32, int8 = measured["openvino_f32"], measured["openvino_int8"]
    assert abs(int8["auc_goal"] - f32["auc_goal"]) <= 0.01
    for band, value in f32["auc_by_band"].items():
        assert abs(int8["auc_by_band"][band] - value) <= 0.02, band


def test_export_form_computes_what_training_computes() -> None:
    """The exported graph computes the front's means and the score's average as matrix products,
    training by pooling: the two must give the same numbers, edges included."""
    import copy

    import torch

    net = recipe_module("imaging_net").load(FOLDER / "torch" / "state_dict.npz")
    generator = torch.Generator().manual_seed(5)
    image = torch.rand(6, 1, 128, 128, generator=generator)
    image *= torch.rand(6, 1, 1, 1, generator=generator)  # flat and contrasty slices
    image[0] = 0.0  # all air: the variance floor, not a division by zero
    exported = copy.deepcopy(net).fix_size(128)
    with torch.no_grad():
        assert (exported.front(image) - net.front(image)).abs().max() < 1e-5
        for ours, theirs in zip(exported(image), net(image), strict=True):
            assert ours.shape == theirs.shape
            assert (ours - theirs).abs().max() < 1e-5


def test_card_records_precision_and_parity(metrics: dict[str, Any]) -> None:
    precision = metrics["precision"]
    assert precision["openvino_f32"] == "INFERENCE_PRECISION_HINT=f32"
    parity = metrics["parity_vs_torch"]
    assert parity["openvino_f32"]["max_abs_score"] < 1e-4
    assert parity["onnxruntime_fp32"]["max_abs_score"] < 1e-4


def test_reference_set_passes_the_validation_gate_on_cpu(
    metrics: dict[str, Any], core: ov.Core
) -> None:
    manifest = parse_manifest((FOLDER / "manifest.json").read_bytes())
    result = validate(
        manifest,
        (FOLDER / "model.xml").read_bytes(),
        bytearray((FOLDER / "model.bin").read_bytes()),
        {CASES_FILE: (FOLDER / CASES_FILE).read_bytes()},
        core=core,
    )
    assert result.passed, result.reason
    assert result.value == pytest.approx(metrics["reference"]["auc_served"], abs=SAME)
    assert result.cases == metrics["reference"]["cases"]
    with np.load(FOLDER / CASES_FILE) as npz:
        assert npz["image"].dtype == np.float16
