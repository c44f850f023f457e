"""Recipe of the notes-phi model: `python models/notes-phi/build.py [--out DIR]`.

Generates synthetic notes (Faker, fixed seeds; ``provisioning/notesdata.py``), trains the PHI token
tagger in numpy (``provisioning/notesmodel.py``), writes the OpenVINO IR (f32, no FP16
compression) and the same weights as ONNX, the reference set for the box's validation gate, the
manifest, the held-out metrics (``metrics.json``), the model card and SHA256SUMS. Nothing is
downloaded. One BLAS thread and fixed seeds make every hashed file byte-identical on a rebuild on
the same machine (a different CPU may round the training's float sums differently).
"""

from __future__ import annotations

import os

# Before numpy loads: one BLAS thread, so float sums happen in one order on every run.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

import numpy as np  # noqa: E402
import openvino as ov  # noqa: E402

from appliance.notes.pipeline import THRESHOLD, NotesPipeline  # noqa: E402
from appliance.notes.tokens import BUCKETS, FEATURES  # noqa: E402
from appliance.notes.types import CLASSES  # noqa: E402
from appliance.updates.manifest import Metric  # noqa: E402
from appliance.updates.validate import CASES_FILE, LABELS, compute_metric  # noqa: E402
from provisioning import notesmodel as nm  # noqa: E402
from provisioning.notesdata import generate  # noqa: E402
from provisioning.noteseval import evaluate, metrics_doc  # noqa: E402
from provisioning.notetemplates import HELD_OUT, TRAIN  # noqa: E402
from provisioning.testmodel import npz_bytes  # noqa: E402

NAME, VERSION = "notes-phi", "1.0.0"
TRAIN_NOTES, TRAIN_SEED = 3000, 11
TEST_NOTES, TEST_SEED = 500, 12
REFERENCE_NOTES, REFERENCE_SEED = 60, 13
MODEL_SEED = 5
TOLERANCE = 0.02
HASHED = ("model.xml", "model.bin", "model.onnx", "manifest.json", CASES_FILE, "metrics.json")


def manifest(expected: float) -> dict[str, object]:
    return {
        "manifest_version": 1,
        "name": NAME,
        "version": VERSION,
        "task": "notes-phi",
        "inputs": [{"name": nm.INPUT, "shape": [-1, FEATURES], "dtype": "i64"}],
        "outputs": [{"name": nm.OUTPUT, "shape": [-1, len(CLASSES)], "dtype": "f32"}],
        # Not NPU: the token axis is dynamic and the NPU compiles static shapes only.
        "compatibility": {"min_openvino": "2024.0", "devices": ["CPU", "GPU"]},
        "reference": {
            "files": [CASES_FILE],
            "metric": "f1",
            "expected": expected,
            "tolerance": TOLERANCE,
        },
    }


def compiled_infer(core: ov.Core, model: ov.Model, hint: str | None = "f32"):  # type: ignore[no-untyped-def]
    config = {"INFERENCE_PRECISION_HINT": hint} if hint else {}
    compiled = core.compile_model(model, "CPU", config)
    return lambda ids: compiled(ids)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    out: Path = parser.parse_args().out
    (out / "reference").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    ids, labels = nm.dataset(generate(TRAIN, TRAIN_NOTES, TRAIN_SEED))
    print(f"notes-phi: {len(labels)} training tokens from {TRAIN_NOTES} notes", flush=True)
    weights = nm.train(ids, labels, seed=MODEL_SEED)
    print(f"notes-phi: trained in {time.monotonic() - started:.0f} s", flush=True)

    model = nm.openvino_model(weights, NAME)
    ov.save_model(model, str(out / "model.xml"), compress_to_fp16=False)
    (out / "model.onnx").write_bytes(nm.onnx_bytes(weights, NAME))

    core = ov.Core()
    infer = compiled_infer(core, core.read_model(out / "model.xml"))
    ref_ids, ref_labels = nm.dataset(generate(HELD_OUT, REFERENCE_NOTES, REFERENCE_SEED))
    (out / CASES_FILE).write_bytes(npz_bytes({nm.INPUT: ref_ids, LABELS: ref_labels}))
    f1 = compute_metric(Metric.F1, infer(ref_ids), ref_labels)
    expected = math.floor(f1 * 1000) / 1000
    doc = manifest(expected)
    (out / "manifest.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")

    test = list(generate(HELD_OUT, TEST_NOTES, TEST_SEED))
    report = evaluate(NotesPipeline(infer), test)
    metrics = metrics_doc(report, HELD_OUT, TEST_NOTES, TEST_SEED)
    metrics["reference_f1"] = round(f1, 4)
    metrics["reference_expected"] = expected
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")

    test_ids, _ = nm.dataset(test)
    parity = measure_parity(core, model, out, weights, test_ids)
    from card import write_card  # the card's prose lives next to this recipe

    write_card(out / "CARD.md", metrics, parity, len(labels), BUCKETS)
    sums = [f"{hashlib.sha256((out / n).read_bytes()).hexdigest()}  {n}" for n in HASHED]
    (out / "SHA256SUMS").write_text("\n".join(sums) + "\n", encoding="utf-8")
    del infer, model
    print(f"notes-phi: built in {time.monotonic() - started:.0f} s; "
          f"reference f1 {f1:.4f}, held-out PHI recall {metrics['phi_overall']}")  # fmt: skip


def _bound(x: float) -> str:
    """A difference as the power of ten above it: stable across runs, honest as a bound."""
    return "0" if x == 0 else f"< 1e{math.floor(math.log10(x)) + 1}"


def measure_parity(core, model, out: Path, weights, ids):  # type: ignore[no-untyped-def]
    """Max |difference| of the class probabilities against numpy, per runtime and precision."""
    reference = nm.forward(weights, ids)
    phi = 1.0 - reference[:, 0] >= THRESHOLD
    results = {}
    hint_type = core.get_property("CPU", "INFERENCE_PRECISION_HINT")
    default = hint_type.to_string() if hasattr(hint_type, "to_string") else str(hint_type)
    for label, hint in (
        ("OpenVINO CPU, f32 hint", "f32"),
        (f"OpenVINO CPU, default ({default})", None),
    ):
        probs = compiled_infer(core, model, hint)(ids)
        flips = int(((1.0 - probs[:, 0] >= THRESHOLD) != phi).sum())
        results[label] = (_bound(float(np.abs(probs - reference).max())), flips)
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        probs = session.run([nm.OUTPUT], {nm.INPUT: ids})[0]
        flips = int(((1.0 - probs[:, 0] >= THRESHOLD) != phi).sum())
        results["onnxruntime CPU, fp32"] = (_bound(float(np.abs(probs - reference).max())), flips)
    except ImportError:
        results["onnxruntime CPU, fp32"] = ("not installed", 0)
    return results, len(ids)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
