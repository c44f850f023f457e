"""models/notes-phi: the committed files are what the recipe builds, the card's figures are
re-measured here, the reference set passes the real gate, and a damaged tagger fails it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from appliance.notes.pipeline import NotesPipeline
from appliance.updates.manifest import Manifest, parse_manifest
from appliance.updates.validate import CASES_FILE, validate
from provisioning import notesmodel as nm
from provisioning.notesdata import generate
from provisioning.noteseval import evaluate, metrics_doc
from provisioning.notetemplates import HELD_OUT

from . import cpuclass
from .metricsdoc import flat

FOLDER = Path(__file__).resolve().parents[2] / "models" / "notes-phi"
METRICS = json.loads((FOLDER / "metrics.json").read_text())


@pytest.fixture(scope="module")
def core() -> ov.Core:
    return ov.Core()


@pytest.fixture(scope="module")
def compiled(core: ov.Core) -> ov.CompiledModel:
    model = core.read_model(FOLDER / "model.xml")
    return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def read_folder(folder: Path) -> tuple[Manifest, bytes, bytearray, dict[str, bytes]]:
    """What the validation gate gets from a bundle: manifest, IR, weights, reference files."""
    return (
        parse_manifest((folder / "manifest.json").read_bytes()),
        (folder / "model.xml").read_bytes(),
        bytearray((folder / "model.bin").read_bytes()),
        {CASES_FILE: (folder / CASES_FILE).read_bytes()},
    )


def sums(folder: Path) -> dict[str, str]:
    lines = (folder / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split("  ", 1) for line in lines)}


def test_committed_files_match_their_sums() -> None:
    for name, digest in sums(FOLDER).items():
        assert hashlib.sha256((FOLDER / name).read_bytes()).hexdigest() == digest, name


def test_recipe_rebuilds_the_committed_files_byte_for_byte(tmp_path: Path) -> None:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    build = subprocess.run(
        [sys.executable, str(FOLDER / "build.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=1800, env=env, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    if cpuclass.same_class():
        assert sums(tmp_path) == sums(FOLDER)
        return
    # Another class of CPU (cpuclass.py): OpenBLAS's kernels round the training's products
    # otherwise, so the weights differ in their last bits; everything else, the held-out metrics
    # among it, must agree (seen: the same bytes, and the same recall and precision).
    weights = {"model.bin", "model.onnx", "metrics.json"}
    now, then = sums(tmp_path), sums(FOLDER)
    assert {k: v for k, v in now.items() if k not in weights} == {
        k: v for k, v in then.items() if k not in weights
    }
    rebuilt = flat(json.loads((tmp_path / "metrics.json").read_text()))
    for key, value in flat(json.loads((FOLDER / "metrics.json").read_text())).items():
        if isinstance(value, float):
            assert rebuilt[key] == pytest.approx(value, abs=0.002), key
        else:
            assert rebuilt[key] == value, key


def test_ir_is_f32_and_small() -> None:
    xml = (FOLDER / "model.xml").read_text()
    assert 'element_type="f16"' not in xml and 'element_type="bf16"' not in xml
    assert (FOLDER / "model.bin").stat().st_size < 5 << 20


def test_card_metrics_are_remeasured(compiled: ov.CompiledModel) -> None:
    notes = list(generate(HELD_OUT, METRICS["notes"], METRICS["seed"]))
    report = evaluate(NotesPipeline(lambda ids: compiled(ids)[0]), notes)
    measured = metrics_doc(report, HELD_OUT, METRICS["notes"], METRICS["seed"])
    for key in ("phi", "phi_overall", "phi_recall_by_type", "clinical"):
        assert measured[key] == METRICS[key], key
    overall = measured["phi_overall"]
    assert overall["recall"] >= 0.99 and overall["precision"] >= 0.90  # the goal
    card = (FOLDER / "CARD.md").read_text()
    for family, c in measured["phi"].items():
        assert f"| {family} | {c['tokens']} | {c['phi_tokens']} | {c['recall']:.4f} |" in card


def test_reference_set_passes_the_gate(core: ov.Core) -> None:
    manifest, xml, weights, reference = read_folder(FOLDER)
    result = validate(manifest, xml, weights, reference, core=core)
    assert result.passed, result.reason
    assert abs(result.value - METRICS["reference_f1"]) < 1e-4


def test_a_tagger_with_shuffled_embeddings_fails_the_gate(core: ov.Core, tmp_path: Path) -> None:
    """The gate can fail: the same graph with its hash buckets permuted forgets every feature."""
    manifest, _, _, reference = read_folder(FOLDER)
    ops = {op.get_friendly_name(): op for op in core.read_model(FOLDER / "model.xml").get_ops()}
    arrays = [ops[n].get_data().copy() for n in ("embedding", "b1", "w2", "b2", "w3", "b3")]
    arrays[0] = np.random.default_rng(0).permutation(arrays[0])
    trained = nm.Weights(*arrays)
    ov.save_model(nm.openvino_model(trained, "broken"), str(tmp_path / "m.xml"),
                  compress_to_fp16=False)  # fmt: skip
    bad = bytearray((tmp_path / "m.bin").read_bytes())
    result = validate(manifest, (tmp_path / "m.xml").read_bytes(), bad, reference, core=core)
    assert not result.passed and "below" in result.reason


def test_onnx_has_the_same_weights_as_the_ir(compiled: ov.CompiledModel) -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    ids = np.load(FOLDER / CASES_FILE)["features"][:2000]
    session = ort.InferenceSession(str(FOLDER / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"features": ids})[0], compiled(ids)[0],
                               atol=1e-5)  # fmt: skip
