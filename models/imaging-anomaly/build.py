#!/usr/bin/env python3
"""Recipe of the imaging anomaly reference model: ``python models/imaging-anomaly/build.py [OUT]``.

Builds, from package data only (see imaging_data.py) and on fixed seeds, byte for byte:
``torch/state_dict.npz`` (the trained weights), ``model.onnx``, ``f32/model.xml``/``.bin``
(OpenVINO IR, f32), ``model.xml``/``model.bin`` (the IR the box serves: NNCF post-training int8
quantisation of the f32 IR), ``reference/cases.npz`` (the validation gate's set),
``metrics.json``, ``manifest.json``, ``CARD.md`` and ``SHA256SUMS``, into OUT (default: this
folder). ``--card-only`` rewrites just CARD.md and SHA256SUMS from OUT's metrics.json (when only
the card's wording changed); ``--from-weights`` skips training and rebuilds everything else from
OUT's ``torch/state_dict.npz`` (when only export, quantisation or measurement changed).

The box serves the int8 IR: it is within 0.01 AUC of f32 and about three times as fast on the
CPU (bench/models.py), which is what the model is built for.

Determinism: fixed seeds, ``torch.use_deterministic_algorithms``, two torch threads and one BLAS
thread (the numbers depend on how sums are split), npz files with fixed zip timestamps, IR nodes
named from the ONNX graph. Training dominates a full build: 22 minutes on two cores (5,000
steps), up to two or three times that when another job (a TCG VM, a test run) shares them; the
--from-weights path takes about a minute, the card-only path seconds.
"""

from __future__ import annotations

import os

# Before numpy loads: a BLAS thread pool only slows the small resamplings down on two cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import copy
import hashlib
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]

import imaging_card  # noqa: E402
import imaging_data as data  # noqa: E402
import imaging_eval as evaluation  # noqa: E402
import numpy as np  # noqa: E402
import openvino as ov  # noqa: E402
import torch  # noqa: E402
from imaging_net import AnomalyNet, load, smooth_logits  # noqa: E402
from torch.nn import functional  # noqa: E402

from appliance.imaging.preprocess import INPUT_SIZE  # noqa: E402
from appliance.updates.validate import CASES_FILE, LABELS, auc  # noqa: E402
from provisioning.testmodel import _rename_saved, npz_bytes  # noqa: E402

NAME, VERSION = "imaging-anomaly", "1.3.0"
SEED = evaluation.SEED
STEPS, BATCH, CROP, LR, POS_WEIGHT = 5000, 32, 64, 3e-3, 4.0
CALIBRATION_CASES, REFERENCE_CASES, TOLERANCE = 160, 100, 0.02
THREADS = 2
F32_HINT = {"INFERENCE_PRECISION_HINT": "f32"}
WEIGHTS, F32_IR, SERVED_IR = "torch/state_dict.npz", "f32/model.xml", "model.xml"
BUILT = (
    "torch/state_dict.npz",
    "model.onnx",
    "f32/model.xml",
    "f32/model.bin",
    "model.xml",
    "model.bin",
    CASES_FILE,
    "metrics.json",
    "manifest.json",
    "CARD.md",
)


def main(argv: list[str]) -> int:
    flags = {"--card-only", "--from-weights"}
    args = [a for a in argv[1:] if a not in flags]
    out = Path(args[0]).resolve() if args else HERE
    started = time.monotonic()
    if "--card-only" in argv:  # the card's wording changed, not the model: no need to train again
        write_card(out, json.loads((out / "metrics.json").read_text()), AnomalyNet())
        return 0
    build(out, trained=load(out / WEIGHTS) if "--from-weights" in argv else None)
    print(f"imaging-anomaly: built into {out} in {time.monotonic() - started:.0f} s")
    return 0


def build(out: Path, trained: AnomalyNet | None = None) -> dict[str, Any]:
    """Train (unless given the ``trained`` net), export, quantise, measure; write every file of
    BUILT and SHA256SUMS to ``out``."""
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    for folder in ("torch", "f32", "reference"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    net = trained if trained is not None else train(data.backgrounds(False))
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    (out / WEIGHTS).write_bytes(npz_bytes(state))
    (out / "model.onnx").write_bytes(export_onnx(net))
    core = ov.Core()
    model = core.read_model(str(out / "model.onnx"))
    ov.save_model(model, str(out / F32_IR), compress_to_fp16=False)
    quantised = quantise(model)
    ov.save_model(quantised, str(out / SERVED_IR), compress_to_fp16=False)
    _rename_saved(out / SERVED_IR)
    del model, quantised
    results = measure(out, net, core)
    reference = reference_set(out, core)
    results["reference"] = reference
    (out / "metrics.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    # The card is written from what metrics.json holds (sorted keys), as --card-only does.
    results = json.loads((out / "metrics.json").read_text())
    manifest = manifest_doc(reference["expected"])
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    write_card(out, results, net)
    return results


def write_card(out: Path, results: dict[str, Any], net: AnomalyNet) -> None:
    """CARD.md from ``results``, then SHA256SUMS over every built file."""
    (out / "CARD.md").write_text(imaging_card.render(results, data.SOURCES, training_doc(net)))
    sums = "".join(f"{sha256(out / name)}  {name}\n" for name in BUILT)
    (out / "SHA256SUMS").write_text(sums)


# --- training --------------------------------------------------------------------------------


def train(pool: tuple[data.Background, ...]) -> AnomalyNet:
    """The net after STEPS AdamW steps on fresh synthetic cases from the training scanners.

    Fresh cases every step (making them costs a fifth of a step; a fixed pool would save little
    and repeat lesions). Channels-last tensors make the CPU convolutions about 1.5 times faster
    with the same arithmetic, so more steps fit in the build's budget.
    """
    rng = np.random.default_rng((SEED, 1))
    # memory_format is missing from torch's typed overloads of Module.to, hence the ignores.
    net: AnomalyNet = AnomalyNet().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimiser = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, LR, total_steps=STEPS)
    net.train()
    for step in range(STEPS):
        cases = data.make_cases(pool, BATCH, rng, augment=True)
        images, masks, labels = _crops(cases, rng)
        logits = net.logits(images.contiguous(memory_format=torch.channels_last))
        loss = _loss(logits, masks, labels)
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        schedule.step()
        if step % 100 == 0:
            print(f"  step {step:4d}  loss {loss.item():.4f}  {time.monotonic():.0f}", flush=True)
    net = net.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return net.eval()


def _loss(logits: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pixel BCE on the lesion mask plus a slice loss on the maxima the score is read from.

    The score is the maximum of the smoothed map over the whole slice, so one bright false spot
    anywhere sinks a lesion-free slice. The slice terms train exactly that: the maximum away from
    any lesion (every crop has such an area, positives too) is pushed to 0, the maximum inside
    the lesion to 1. The pixel term keeps the heat map dense and the gradients many.
    """
    pixel = functional.binary_cross_entropy_with_logits(
        logits, masks, pos_weight=torch.tensor(POS_WEIGHT)
    )
    smooth = smooth_logits(logits)
    near = functional.max_pool2d(masks, 7, stride=1, padding=3) > 0
    background = smooth.masked_fill(near, -1e4).amax(dim=(1, 2, 3))
    lesion = smooth.masked_fill(masks <= 0.25, -1e4).amax(dim=(1, 2, 3))  # noqa: PLR2004
    positive = labels > 0
    free = functional.binary_cross_entropy_with_logits(background, torch.zeros_like(background))
    hit = functional.binary_cross_entropy_with_logits(
        lesion[positive], torch.ones_like(lesion[positive])
    )
    return pixel + free + hit


def _crops(
    cases: data.CaseSet, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CROP x CROP windows (a lesion's centre well inside), masks at the logits' half resolution."""
    n = len(cases.labels)
    images = np.empty((n, 1, CROP, CROP), np.float32)
    masks = np.empty((n, 1, CROP, CROP), np.float32)
    limit = INPUT_SIZE - CROP
    for i in range(n):
        if cases.labels[i]:
            cy, cx = np.argwhere(cases.masks[i, 0]).mean(axis=0).astype(int)
            top = int(np.clip(cy - rng.integers(12, CROP - 12), 0, limit))
            left = int(np.clip(cx - rng.integers(12, CROP - 12), 0, limit))
        else:
            top, left = (int(rng.integers(limit + 1)) for _ in range(2))
        images[i] = cases.images[i, :, top : top + CROP, left : left + CROP]
        masks[i] = cases.masks[i, :, top : top + CROP, left : left + CROP]
    half = functional.avg_pool2d(torch.from_numpy(masks), 2)
    return torch.from_numpy(images), half, torch.from_numpy(cases.labels.astype(np.float32))


# --- export and quantisation -------------------------------------------------------------------


def export_onnx(net: AnomalyNet) -> bytes:
    """The eval-mode net in its export form as ONNX (opset 17, batch axis dynamic, batch norm
    folded)."""
    buffer = io.BytesIO()
    torch.onnx.export(
        copy.deepcopy(net).fix_size(INPUT_SIZE),
        (torch.zeros(1, 1, INPUT_SIZE, INPUT_SIZE),),
        buffer,
        input_names=["image"],
        output_names=["score", "heatmap"],
        dynamic_axes={"image": {0: "batch"}, "score": {0: "batch"}, "heatmap": {0: "batch"}},
        opset_version=17,
        dynamo=False,
        do_constant_folding=True,
    )
    return buffer.getvalue()


def quantise(model: ov.Model) -> ov.Model:
    """``model`` quantised to int8 by NNCF, calibrated on training-scanner cases only.

    The local-contrast front and the read-out stay out of it: quantising the front's means and
    variances costs accuracy, and both are matrix products on one channel, which int8 does not
    speed up. (Their last ops are named after the outputs.)
    """
    import nncf

    rng = np.random.default_rng((SEED, 4))
    cases = data.make_cases(data.backgrounds(False), CALIBRATION_CASES, rng, augment=False)
    rows = [cases.images[i : i + 1] for i in range(CALIBRATION_CASES)]
    return nncf.quantize(
        model,
        nncf.Dataset(rows),
        preset=nncf.QuantizationPreset.MIXED,  # asymmetric activations: the input is signed
        subset_size=len(rows),
        ignored_scope=nncf.IgnoredScope(
            patterns=["/front/.*", "/readout/.*"], names=["score", "heatmap"]
        ),
    )


# --- measurement -------------------------------------------------------------------------------


def measure(out: Path, net: AnomalyNet, core: ov.Core) -> dict[str, Any]:
    """Metrics of every runtime on the held-out and seen sets, and their parity with torch."""
    import onnxruntime

    held, seen = evaluation.evaluation_set(True), evaluation.evaluation_set(False)
    f32 = core.compile_model(str(out / F32_IR), "CPU", F32_HINT)
    default = core.compile_model(str(out / F32_IR), "CPU")
    int8 = core.compile_model(str(out / SERVED_IR), "CPU")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    session = onnxruntime.InferenceSession(
        str(out / "model.onnx"), options, ["CPUExecutionProvider"]
    )

    def torch_run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            score, heat = net(torch.from_numpy(x))
        return score.numpy(), heat.numpy()

    runners = {
        "openvino_f32": lambda x: tuple(f32(x).values()),
        "openvino_int8": lambda x: tuple(int8(x).values()),
        "openvino_default_precision": lambda x: tuple(default(x).values()),
        "onnxruntime_fp32": lambda x: tuple(session.run(None, {"image": x})),
        "torch_fp32": torch_run,
    }
    outputs = {name: evaluation.run_batched(run, held.images) for name, run in runners.items()}
    results: dict[str, Any] = {
        "held_out": {
            name: evaluation.metrics(s, h if name != "openvino_default_precision" else None, held)
            for name, (s, h) in outputs.items()
        },
        "seen": {
            "openvino_f32": evaluation.metrics(
                *evaluation.run_batched(runners["openvino_f32"], seen.images), seen
            )
        },
        "cases": {"held_out": len(held.labels), "seen": len(seen.labels)},
        "precision": {
            "openvino_f32": "INFERENCE_PRECISION_HINT=f32",
            "openvino_default_precision": str(default.get_property("INFERENCE_PRECISION_HINT")),
            "openvino_int8": "int8 (quantised layers); default precision elsewhere",
            "openvino": str(ov.get_version()),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }
    torch_score, torch_heat = outputs["torch_fp32"]
    results["parity_vs_torch"] = {
        name: {
            "max_abs_score": float(f"{np.abs(s - torch_score).max():.3g}"),
            "max_abs_heatmap": float(f"{np.abs(h - torch_heat).max():.3g}"),
        }
        for name, (s, h) in outputs.items()
        if name != "torch_fp32"
    }
    goal = results["held_out"]
    results["int8_auc_delta"] = round(
        goal["openvino_int8"]["auc_goal"] - goal["openvino_f32"]["auc_goal"], 4
    )
    return results


def reference_set(out: Path, core: ov.Core) -> dict[str, Any]:
    """The gate's set: REFERENCE_CASES held-out cases (half lesions of contrast >= 0.15), f16,
    and the AUC the served (int8) IR measures on it."""
    held = evaluation.evaluation_set(True)
    rng = np.random.default_rng((SEED, 5))
    positives = np.flatnonzero(held.contrast >= data.GOAL_CONTRAST)
    negatives = np.flatnonzero(held.labels == 0)
    half = REFERENCE_CASES // 2
    chosen = np.sort(np.concatenate([rng.choice(positives, half, replace=False),
                                     rng.choice(negatives, half, replace=False)]))  # fmt: skip
    images = held.images[chosen].astype(np.float16)  # half the bytes; the gate casts to f32
    labels = held.labels[chosen]
    (out / CASES_FILE).write_bytes(npz_bytes({"image": images, LABELS: labels}))
    served = core.compile_model(str(out / SERVED_IR), "CPU")  # as the gate compiles int8 IRs
    scores = np.concatenate(
        [served(images[i : i + 25].astype(np.float32))["score"] for i in range(0, len(images), 25)]
    )
    measured = auc(scores[:, 0], labels)
    return {
        "cases": len(labels),
        "auc_served": round(measured, 4),
        "expected": math.floor(measured * 1000) / 1000,
        "tolerance": TOLERANCE,
    }


def manifest_doc(expected: float) -> dict[str, Any]:
    """The bundle manifest (appliance/updates/manifest.py); the gate measures ``score``."""
    side = INPUT_SIZE
    return {
        "manifest_version": 1,
        "name": NAME,
        "version": VERSION,
        "task": "imaging-anomaly",
        "inputs": [{"name": "image", "shape": [-1, 1, side, side], "dtype": "f32"}],
        "outputs": [
            {"name": "score", "shape": [-1, 1], "dtype": "f32"},
            {"name": "heatmap", "shape": [-1, 1, side, side], "dtype": "f32"},
        ],
        "compatibility": {"min_openvino": "2024.0", "devices": ["CPU", "GPU", "NPU"]},
        "reference": {
            "files": [CASES_FILE],
            "metric": "auc",
            "expected": expected,
            "tolerance": TOLERANCE,
        },
    }


def training_doc(net: AnomalyNet) -> dict[str, Any]:
    """The training settings the card states."""
    parameters = sum(p.numel() for p in net.parameters())
    return {"parameters": parameters, "steps": STEPS, "batch": BATCH, "crop": CROP, "lr": LR,
            "pos_weight": POS_WEIGHT, "seed": SEED, "version": VERSION}  # fmt: skip


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
