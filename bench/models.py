"""Benchmark of the reference models: OpenVINO against onnxruntime and torch on the same weights.

For every ``models/*/`` folder with a ``model.xml``, in one run and on the same inputs (the
model's own reference cases, ``reference/cases.npz``): OpenVINO f32 (``INFERENCE_PRECISION_HINT``
f32, as the box compiles f32 models), OpenVINO INT8 where the folder has an int8 IR (its served
``model.xml`` beside ``f32/``, or ``int8/model.xml``; the device's default precision outside the
quantised layers), onnxruntime fp32 (``model.onnx``, CPU provider)
and torch eager where the folder has a ``torch_module.py`` (models/README.md). Every runtime gets
two threads. Batch-1 latency is sampled in interleaved rounds (each round runs every runtime in
turn), so a burst of load from other processes hits all of them alike; throughput is the best of
synchronous batches of 1, 8 and 32.

Run ``.venv/bin/python bench/models.py [--quick]``. Prints one table, then ``name: value`` lines,
among them ``imaging_int8_vs_ort_fp32_speedup`` (onnxruntime fp32 batch-1 p50 over OpenVINO INT8
batch-1 p50). Asserts nothing: timings on a shared machine are information, not a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import openvino as ov
from _inference_common import model_irs

ROOT = Path(__file__).resolve().parent.parent
THREADS = 2
BATCHES = (1, 8, 32)
Array = npt.NDArray[Any]
Call = Callable[[dict[str, Array]], object]


@dataclass
class Runtime:
    label: str
    call: Call
    latencies: list[float] = field(default_factory=list)
    best: tuple[float, int] = (0.0, 0)  # cases per second, at batch size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = parser.parse_args()
    rounds, per_round, seconds = (5, 5, 0.3) if args.quick else (20, 25, 1.5)
    lines: list[str] = []
    rows: list[tuple[str, Runtime, float]] = []
    for folder in sorted(p.parent for p in (ROOT / "models").glob("*/model.xml")):
        inputs = _inputs(folder)
        runtimes = _runtimes(folder)
        print(f"models: {folder.name}: {', '.join(r.label for r in runtimes)}", flush=True)
        _latency_rounds(runtimes, _slice(inputs, 0, 1), rounds, per_round)
        for runtime in runtimes:
            runtime.best = _throughput(runtime.call, inputs, seconds)
        base = next((r for r in runtimes if r.label == "onnxruntime fp32"), None)
        base_p50 = _pct(base.latencies, 50) if base else float("nan")
        slug = folder.name.split("-")[0]
        for runtime in runtimes:
            p50 = _pct(runtime.latencies, 50)
            rows.append((folder.name, runtime, base_p50 / p50))
            key = runtime.label.replace(" ", "_").replace("openvino_", "ov_")
            lines.append(f"{slug}_{key}_p50_ms: {p50:.3f}")
        ov_int8 = next((r for r in runtimes if r.label == "openvino int8"), None)
        if ov_int8 and base:
            lines.append(
                f"{slug}_int8_vs_ort_fp32_speedup: {base_p50 / _pct(ov_int8.latencies, 50):.2f}"
            )
    _table(rows)
    print()
    print("\n".join(lines))
    return 0


def _inputs(folder: Path) -> dict[str, Array]:
    manifest = json.loads((folder / "manifest.json").read_text())
    with np.load(folder / "reference" / "cases.npz", allow_pickle=False) as npz:
        return {
            spec["name"]: np.ascontiguousarray(npz[spec["name"]], dtype=_dtype(spec["dtype"]))
            for spec in manifest["inputs"]
        }


def _dtype(name: str) -> type:
    return {"f32": np.float32, "i64": np.int64, "i32": np.int32}.get(name, np.float32)


def _slice(inputs: dict[str, Array], start: int, size: int) -> dict[str, Array]:
    """``size`` cases from ``start`` (wrapping round the reference set when it is short)."""
    n = len(next(iter(inputs.values())))
    index = np.arange(start, start + size) % n
    return {name: np.ascontiguousarray(a[index]) for name, a in inputs.items()}


def _runtimes(folder: Path) -> list[Runtime]:
    core = ov.Core()
    out = []
    f32_ir, int8_ir = model_irs(folder)
    f32 = core.compile_model(
        str(f32_ir),
        "CPU",
        {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
         "INFERENCE_NUM_THREADS": THREADS},
    )  # fmt: skip
    out.append(Runtime("openvino f32", _ov_call(f32)))
    if int8_ir is not None:
        int8 = core.compile_model(
            str(int8_ir), "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": THREADS}
        )
        out.append(Runtime("openvino int8", _ov_call(int8)))
    if (folder / "model.onnx").is_file():
        out.append(Runtime("onnxruntime fp32", _ort_call(folder / "model.onnx")))
    if (folder / "torch_module.py").is_file():
        out.append(Runtime("torch eager fp32", _torch_call(folder / "torch_module.py")))
    return out


def _ov_call(compiled: Any) -> Call:
    request = compiled.create_infer_request()
    return lambda feed: request.infer(feed)


def _ort_call(path: Path) -> Call:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, ["CPUExecutionProvider"])
    return lambda feed: session.run(None, feed)


def _torch_call(path: Path) -> Call:
    import torch

    torch.set_num_threads(THREADS)
    spec = importlib.util.spec_from_file_location(f"{path.parent.name}_torch", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.load()

    def call(feed: dict[str, Array]) -> object:
        with torch.inference_mode():
            return net(*(torch.from_numpy(a) for a in feed.values()))

    return call


def _latency_rounds(runtimes: list[Runtime], feed: dict[str, Array], rounds: int, per: int) -> None:
    for runtime in runtimes:  # warm-up: first calls allocate and pick kernels
        for _ in range(10):
            runtime.call(feed)
    for _ in range(rounds):
        for runtime in runtimes:
            for _ in range(per):
                t0 = time.perf_counter_ns()
                runtime.call(feed)
                runtime.latencies.append((time.perf_counter_ns() - t0) / 1e6)


def _throughput(call: Call, inputs: dict[str, Array], seconds: float) -> tuple[float, int]:
    best = (0.0, 0)
    for batch in BATCHES:
        feed = _slice(inputs, 0, batch)
        call(feed)
        done, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            call(feed)
            done += batch
        best = max(best, (done / elapsed, batch))
    return best


def _pct(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q)) if samples else float("nan")


def _table(rows: list[tuple[str, Runtime, float]]) -> None:
    head = f"{'model':<18} {'runtime':<18} {'p50 ms':>8} {'p99 ms':>8} {'best/s':>9} {'@batch':>6}"
    head += f" {'vs ORT p50':>10}"
    print()
    print(head)
    print("-" * len(head))
    for model, runtime, ratio in rows:
        rate, batch = runtime.best
        print(
            f"{model:<18} {runtime.label:<18} {_pct(runtime.latencies, 50):>8.3f} "
            f"{_pct(runtime.latencies, 99):>8.3f} {rate:>9.0f} {batch:>6} {ratio:>9.2f}x"
        )
    print(f"(threads {THREADS} per runtime; os.cpu_count {os.cpu_count()}; shared machine: noisy)")


if __name__ == "__main__":
    sys.exit(main())
