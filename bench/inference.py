"""Benchmark of inference: each bundled model on OpenVINO against its peers, and the API's cost.

For each bundled model (today the demo ``risk-demo`` from provisioning.testmodel, built into a
temporary folder: no downloads) the same run measures OpenVINO f32 through the project's engine
(and INT8 where the model is quantised) against onnxruntime fp32 and torch eager (when torch is
importable): batch-1 latency p50/p99, the best throughput over batch sizes, and that throughput as
a fraction of the CPU's fp32 peak. Then it serves the model the way the box does (enrolled swtpm,
a signed bundle installed by the real update agent, uvicorn over TLS) and compares the API's
end-to-end batch-1 latency and its throughput at 16 clients (``wrk``, a C load generator) with
the raw engine's (16 threads on OpenVINO's own infer, a request each: the ratio's peer; and, as
information, 16 threads on ``ServedModel.infer``, which batches concurrent calls), plus what
one durable write (audit append + result commit) costs on its own (the API half lives in
``_inference_api.py``: it also serves the per-request path of before), and the floor: the same
uvicorn and TLS serving apps that do nothing (``_inference_floor.py``).

Run ``.venv/bin/python bench/inference.py [--quick]``. Prints progress, one table, then
``api_overhead_ms_p50`` and ``api_vs_engine_throughput_ratio``. Asserts nothing: timings on a
shared machine are information, not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import openvino as ov
from _inference_api import ApiFigures, measure_api
from _inference_common import (
    HEAVY_BATCHES,
    BenchSetupError,
    Row,
    Settings,
    model_irs,
    progress,
)
from _inference_peers import (
    Array,
    Call,
    Contender,
    CpuPeak,
    cpu_peak,
    latencies_ms,
    logistic_onnx,
    onnxruntime_contender,
    pct,
    rate,
    torch_contender,
    torch_module_contender,
)

from appliance.inference import engine
from provisioning.testmodel import BIAS, FEATURES, WEIGHTS, build_model_dir

ROOT = Path(__file__).resolve().parent.parent
HEADLINE_MODEL = "imaging-anomaly"
HEADLINE_NOTE = f"""\
The headline figures are {HEADLINE_MODEL}'s: studies are what the box is bought for. The
per-model lines before them give every model's; for the demo and breast-cancer models one
inference costs microseconds, so any HTTPS server's per-request work (TLS, auth, audit and result
fsyncs) dwarfs it and their ratios say how cheap the model is, not how lean the API is.
"""


@dataclass(frozen=True)
class BundledModel:
    """A model the box ships, and how to benchmark it: add one to :func:`bundled_models`."""

    name: str
    input: str
    output: str
    flops_per_case: float
    flops_note: str
    build: Callable[[Path], Path]  # writes the model folder (IR, manifest, reference cases)
    example: Callable[[int], Array]  # n cases of input
    peers: Callable[[int], list[Contender]]  # the same model in other runtimes, given threads
    # Milliseconds, not microseconds, a case: fewer calls and cases give the same precision.
    heavy: bool = False

    def settings(self, s: Settings) -> Settings:
        if not self.heavy:
            return s
        return dataclasses.replace(
            s, latency_calls=max(s.latency_calls // 10, 100), warmup=max(s.warmup // 10, 10),
            async_cases=max(s.async_cases // 64, 256), batches=HEAVY_BATCHES,
        )  # fmt: skip


def risk_demo() -> BundledModel:
    """The demo logistic-regression risk model: features [-1, 8] f32 -> risk [-1, 1]."""

    def example(n: int) -> Array:
        return np.random.default_rng(11).standard_normal((n, FEATURES), dtype=np.float32)

    def peers(threads: int) -> list[Contender]:
        def onnx_model() -> bytes:
            return logistic_onnx(WEIGHTS, float(BIAS), name="risk-demo", input_name="features",
                                 output_name="risk")  # fmt: skip

        return [
            onnxruntime_contender(onnx_model, "features", "risk", threads=threads),
            torch_contender(WEIGHTS, float(BIAS), threads=threads),
        ]

    return BundledModel(
        "risk-demo", "features", "risk", 2 * FEATURES + 1 + 4,
        f"MatMul 2x{FEATURES} + bias 1 + sigmoid ~4", build_model_dir, example,
        peers,
    )  # fmt: skip


def breast_cancer_risk() -> BundledModel:
    """models/breast-cancer-risk as committed: features [-1, 30] f32 -> risk [-1, 1]; its
    model.onnx holds the same f32 weights (onnxruntime), and scikit-learn is the trained model."""
    from provisioning import riskmodel as rm

    committed = Path(__file__).resolve().parent.parent / "models" / rm.NAME

    def build(folder: Path) -> Path:
        shutil.copytree(committed, folder)
        return folder

    def example(n: int) -> Array:
        with np.load(committed / "reference" / "cases.npz", allow_pickle=False) as npz:
            held_out = npz[rm.INPUT]
        return np.ascontiguousarray(np.resize(held_out, (n, rm.FEATURES)))

    def peers(threads: int) -> list[Contender]:
        onnx = onnxruntime_contender(lambda: (committed / "model.onnx").read_bytes(), rm.INPUT,
                                     rm.OUTPUT, threads=threads)  # fmt: skip
        try:
            fitted = rm.fit(rm.load_split())
        except ModuleNotFoundError as exc:
            return [onnx, Contender("scikit-learn predict_proba (f64)", None, f"{exc.name}: "
                                    "not installed, skipped")]  # fmt: skip
        return [onnx, Contender("scikit-learn predict_proba (f64)", fitted.predict, "the "
                                "trained pipeline, parameters rounded to f32")]  # fmt: skip

    return BundledModel(
        rm.NAME, rm.INPUT, rm.OUTPUT, 4 * rm.FEATURES + 1 + 4,
        f"Sub+Div {rm.FEATURES} each, MatMul 2x{rm.FEATURES} + bias 1 + sigmoid ~4", build,
        example, peers,
    )  # fmt: skip


def imaging_anomaly() -> BundledModel:
    """models/imaging-anomaly as committed: image [-1, 1, 128, 128] f32 -> score [-1, 1] (and a
    heat map); onnxruntime runs its model.onnx, torch its trained module, on the same weights."""
    committed = ROOT / "models" / "imaging-anomaly"

    def build(folder: Path) -> Path:
        shutil.copytree(committed, folder)
        return folder

    def example(n: int) -> Array:
        with np.load(committed / "reference" / "cases.npz", allow_pickle=False) as npz:
            images = npz["image"].astype(np.float32)  # stored as f16; the model takes f32
        return np.ascontiguousarray(np.resize(images, (n, *images.shape[1:])))

    def peers(threads: int) -> list[Contender]:
        return [
            onnxruntime_contender(lambda: (committed / "model.onnx").read_bytes(), "image",
                                  "score", threads=threads),
            torch_module_contender(committed, threads=threads),
        ]  # fmt: skip

    flops = conv_flops(ov.Core().read_model(str(model_irs(committed)[0])))
    return BundledModel("imaging-anomaly", "image", "score", flops,
                        "convolutions at batch 1, 2 FLOP per multiply-add", build, example,
                        peers, heavy=True)  # fmt: skip


def conv_flops(model: Any) -> float:
    """FLOPs of one case's convolutions (2 per multiply-add): the bulk of a conv net's work."""
    model = model.clone()
    shape = model.input(0).get_partial_shape()
    shape[0] = 1
    model.reshape({model.input(0): shape})
    total = 0.0
    for op in model.get_ops():
        if op.get_type_name() == "Convolution":
            weights = list(op.input(1).get_shape())  # [out, in, kh, kw]
            total += 2.0 * math.prod(op.get_output_shape(0)) * math.prod(weights[1:])
    return total


def bundled_models() -> list[BundledModel]:
    return [risk_demo(), breast_cancer_risk(), imaging_anomaly()]


# -- measuring -----------------------------------------------------------------------------------


def best_latencies_ms(call: Call, x: Array, s: Settings) -> Array:
    """The round with the lowest median of ``s.repeats`` rounds of ``s.latency_calls`` calls."""
    rounds = [latencies_ms(call, x, s.latency_calls, s.warmup if i == 0 else 0)
              for i in range(s.repeats)]  # fmt: skip
    return min(rounds, key=lambda r: pct(r, 50))


def best_rate(call: Call, example: Callable[[int], Array], s: Settings) -> tuple[float, int]:
    """The best throughput over the batch sizes ``s.batches`` and the batch size that gave it."""
    found = [(rate(call, example(b), s.rate_seconds, s.repeats), b) for b in s.batches]
    return max(found)


# -- the models ----------------------------------------------------------------------------------


def _read(xml: Path, ov_core: Any) -> Any:
    weights = bytearray(xml.with_suffix(".bin").read_bytes())
    return engine.load_model(xml.read_bytes(), weights, core=ov_core)


def openvino_contenders(folder: Path, m: BundledModel, ov_core: Any) -> tuple[list[Contender], Any]:
    """OpenVINO through the project's engine: f32 (and INT8 if quantised), LATENCY hint.

    Returns the contenders and the f32 model (the table's reference outputs)."""
    f32_ir, int8_ir = model_irs(folder)
    model = _read(f32_ir, ov_core)
    f32 = engine.compile(model, "CPU", core=ov_core, latency=True)
    request = f32.create_infer_request()
    port = f32.output(m.output)

    def lean(x: Array) -> object:
        request.set_tensor(m.input, ov.Tensor(x, shared_memory=True))
        request.infer()
        return np.array(request.get_tensor(port).data)

    out = [
        Contender("OpenVINO f32, engine.infer (LATENCY hint)",
                  lambda x: engine.infer(f32, {m.input: x})[m.output],
                  "the API's path: a new infer request per call"),
        Contender("OpenVINO f32, reused request, shared input tensor", lean,
                  "same compiled model: OpenVINO's own per-call floor"),
    ]  # fmt: skip
    if int8_ir is not None:  # the vendor's INT8 build beside the f32 one (models/imaging-anomaly)
        int8 = engine.compile(_read(int8_ir, ov_core), "CPU", core=ov_core, int8=True, latency=True)
        out.append(
            Contender(
                f"OpenVINO INT8 ({int8_ir.relative_to(folder)}), engine.infer",
                lambda x: engine.infer(int8, {m.input: x})[m.output],
                "NNCF post-training quantisation",
            )
        )
    elif engine.is_int8(model):
        int8 = engine.compile(model, "CPU", core=ov_core, int8=True, latency=True)
        out.append(
            Contender(
                "OpenVINO INT8, engine.infer", lambda x: engine.infer(int8, {m.input: x})[m.output]
            )
        )
    else:
        why = "not quantised (no FakeQuantize, no int8 weights): no INT8 build to run"
        out.append(Contender("OpenVINO INT8", None, why))
    return out, model


def measure_model(
    m: BundledModel, folder: Path, s: Settings, peak: CpuPeak, ov_core: Any
) -> list[Row]:
    rows = [Row(f"{m.name}: {m.flops_per_case:.0f} FLOP/case ({m.flops_note})", section=True)]
    ours, model = openvino_contenders(folder, m, ov_core)
    check = m.example(64)
    reference = np.asarray(
        engine.infer(engine.compile(model, "CPU", core=ov_core), {m.input: check})[m.output]
    )
    for c in [*ours, *m.peers(s.threads)]:
        if c.call is None:
            rows.append(Row(c.label, note=c.note))
            continue
        progress(f"{m.name}: {c.label}")
        diff = float(np.max(np.abs(np.asarray(c.call(check)).reshape(reference.shape) - reference)))
        lat = best_latencies_ms(c.call, m.example(1), s)
        best, batch = best_rate(c.call, m.example, s)
        note = "; ".join(filter(None, [c.note, f"max |diff| vs OpenVINO {diff:.0e}"]))
        rows.append(Row(c.label, pct(lat, 50), pct(lat, 99), best, f"b={batch}",
                        best * m.flops_per_case / peak.flops, note))  # fmt: skip
    progress(f"{m.name}: OpenVINO run_cases (THROUGHPUT hint)")
    tput = engine.compile(model, "CPU", core=ov_core, latency=False)
    cases = {m.input: m.example(s.async_cases)}
    engine.run_cases(tput, cases, m.output)  # warm-up
    best = 0.0
    for _ in range(s.repeats):
        t0 = time.perf_counter()
        engine.run_cases(tput, cases, m.output)
        best = max(best, s.async_cases / (time.perf_counter() - t0))
    rows.append(Row("OpenVINO f32, run_cases (AsyncInferQueue, THROUGHPUT)", rate=best,
                    batch=f"b={engine.DEFAULT_BATCH}", peak=best * m.flops_per_case / peak.flops,
                    note=f"{s.async_cases} cases, {engine.DEFAULT_BATCH} per request"))  # fmt: skip
    return rows


# -- the report ----------------------------------------------------------------------------------


def _num(value: float | None, spec: str) -> str:
    return "" if value is None or math.isnan(value) else format(value, spec)


def _line(label: str, width: int, cells: tuple[str, ...], note: str) -> str:
    widths = (8, 8, 10, 6, 8)
    columns = " ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))
    return f"{label:<{width}}  {columns}  {note}"


def report(rows: list[Row], peak: CpuPeak, apis: list[ApiFigures]) -> None:
    width = max(len(r.label) for r in rows if not r.section)
    head = _line("measure", width, ("p50 ms", "p99 ms", "cases/s", "batch", "% peak"), "note")
    print(f"\n{head}\n{'-' * (len(head) + 30)}")
    for r in rows:
        if r.section:
            print(f"\n[{r.label}]")
            continue
        peak_pct = None if r.peak is None else r.peak * 100
        cells = (_num(r.p50, ".3f"), _num(r.p99, ".3f"), _num(r.rate, ".0f"), r.batch,
                 _num(peak_pct, ".1e"))  # fmt: skip
        print(_line(r.label, width, cells, r.note))
    print(f"""
CPU peak: {peak.describe()}.
% peak = FLOP/case x best cases/s / peak, in percent. The clock is /proc/cpuinfo's "cpu MHz",
the nominal one a VM reports; cores that boost above it let a well-vectorised model (the imaging
convolutions) show more than 100 %.
A model this small (tens of FLOPs a case) is bound by per-call overhead (Python -> C++ call,
infer-request setup, thread hand-offs), not by FLOPs: its % peak is tiny by construction and
says something only for the convolutional imaging model.
Every API request has its audit record fsynced (log file fsync + head.json replaced with fsync of
file and folder, under one flock; every 100th record is a checkpoint that advances the TPM
counter) and then its result committed to SQLite (WAL, synchronous=FULL) before the answer
leaves. That is the product's durability promise; it is measured, not disabled. "now" group-
commits both (ADR 0009: one write, fsync and head for all the records queued meanwhile, one
transaction for the rows); "before" is the per-request path it replaced, served from the same
box in the same run. At one client group commit cannot help: the fsyncs stay on the path.
uvicorn runs in this process (a thread, as in the tests); wrk runs beside it on the same cores.
api_overhead_ms_p50 = API p50 with wrk -c1 - engine p50, same run; ratio = wrk -c16 / 16 threads.
At 16 clients the API and the engine have the same two cores, so the ratio cannot exceed the
engine's CPU-ms an inference over the API process's CPU-ms a request (both in the notes). The
"API process CPU" rows split the latter by thread (from /proc, around the 16-client run). The
"floor" rows serve apps that do nothing (a bare ASGI app, FastAPI with one route) from the same
uvicorn, TLS certificate, request body and answer size: TLS, HTTP and FastAPI alone. The rest of
the API's cost is its own work: the token check, decoding, the audit record, the result row and
the hand-offs between threads.
""")  # fmt: skip
    print(HEADLINE_NOTE)
    for api in apis:
        slug = api.model.replace("-", "_")
        print(f"{slug}_api_overhead_ms_p50: {api.overhead_ms:.3f}")
        print(f"{slug}_api_vs_engine_throughput_ratio: {_num(api.ratio, '.3f') or 'nan'}")
    headline = next(api for api in apis if api.model == HEADLINE_MODEL)
    print(f"api_overhead_ms_p50: {headline.overhead_ms:.3f}")
    print(f"api_vs_engine_throughput_ratio: {_num(headline.ratio, '.3f') or 'nan'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (seconds, not minutes)")
    args = parser.parse_args()
    peak = cpu_peak()
    s = Settings.quick(peak.cores) if args.quick else Settings(threads=peak.cores)
    models = bundled_models()
    print(f"inference benchmark: {', '.join(m.name for m in models)}; OpenVINO "
          f"{engine.openvino_version()}; {peak.describe()}{' (quick)' if args.quick else ''}",
          flush=True)  # fmt: skip
    top = Path(tempfile.mkdtemp(prefix="infb", dir="/tmp"))
    try:
        rows: list[Row] = []
        ov_core = ov.Core()
        for m in models:
            folder = m.build(top / "models" / m.name)
            rows += measure_model(m, folder, m.settings(s), peak, ov_core)
        # The API rows: every bundled model served as on the box, one box each. The first also
        # gets the durable write alone and the per-request path of before (model-independent).
        apis = []
        for index, m in enumerate(models):
            (top / f"box-{index}").mkdir()
            apis.append(measure_api(m, top / "models" / m.name, m.settings(s), top / f"box-{index}",
                                    durable=index == 0))  # fmt: skip
    except BenchSetupError as exc:
        print(f"inference benchmark: {exc}")
        return 1
    finally:
        shutil.rmtree(top, ignore_errors=True)
    report(rows + [row for api in apis for row in api.rows], peak, apis)
    return 0


if __name__ == "__main__":
    sys.exit(main())
