"""The measuring tools of bench/inference.py and what it measures ours against.

Timing loops, the disk's fsync floor and the CPU's peak; then the peers. Nothing here is the
appliance's code. The peers run the same model with the same weights: onnxruntime (CPU execution
provider, fp32) on an ONNX graph built with ``onnx.helper``, and torch eager when torch is
importable (it is never installed for this). Each peer that cannot run comes
back as a :class:`Contender` without a ``call`` and a note saying why, so the table shows the gap
instead of hiding it. ``wrk`` is the load generator for the API (a C program: a Python client
would measure itself).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
Call = Callable[[Array], object]


@dataclass(frozen=True)
class Contender:
    """One way of running a model: ``call(batch)`` runs it, or ``None`` with ``note`` saying why."""

    label: str
    call: Call | None
    note: str = ""


# -- timing ----------------------------------------------------------------------------------------


def latencies_ms(call: Call, x: Array, calls: int, warmup: int) -> Array:
    for _ in range(warmup):
        call(x)
    out = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter_ns()
        call(x)
        out[i] = time.perf_counter_ns() - t0
    return out / 1e6


def paced_latencies_ms(call: Call, x: Array, calls: int, gap_s: float) -> Array:
    """Like :func:`latencies_ms`, with the caller idle ``gap_s`` between calls (not timed)."""
    out = np.empty(calls)
    for i in range(calls):
        time.sleep(gap_s)
        t0 = time.perf_counter_ns()
        call(x)
        out[i] = time.perf_counter_ns() - t0
    return out / 1e6


def rate(call: Call, x: Array, seconds: float, repeats: int) -> float:
    """Best cases/s of back-to-back calls on ``x`` over ``repeats`` runs of ``seconds``."""
    best = 0.0
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while (now := time.perf_counter()) - start < seconds or calls == 0:
            call(x)
            calls += 1
        best = max(best, calls * len(x) / (now - start))
    return best


def threaded_rate(call: Call, x: Array, threads: int, seconds: float) -> float:
    """Calls/s of ``threads`` threads each calling ``call(x)`` back to back for ``seconds``."""
    stop = threading.Event()
    counts = [0] * threads
    gate = threading.Barrier(threads + 1)

    def work(i: int) -> None:
        gate.wait()
        while not stop.is_set():
            call(x)
            counts[i] += 1

    workers = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    gate.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    elapsed = time.perf_counter() - start
    for w in workers:
        w.join()
    return sum(counts) / elapsed


def pct(samples: Array, q: float) -> float:
    return float(np.percentile(samples, q))


def fsync_floor(folder: Path, n: int) -> Array:
    """ms of one small append + fsync on the state disk: what one durable step costs at least."""
    path = folder / "bench-fsync.tmp"
    out = np.empty(n)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        for i in range(n):
            t0 = time.perf_counter_ns()
            os.write(fd, b"x" * 200)
            os.fsync(fd)
            out[i] = time.perf_counter_ns() - t0
    finally:
        os.close(fd)
        path.unlink()
    return out / 1e6


# -- the CPU's peak ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuPeak:
    """Peak fp32 FLOP/s = cores x clock x FLOPs per cycle per core (FMA width from the flags)."""

    cores: int
    ghz: float
    flops_per_cycle: int
    isa: str

    @property
    def flops(self) -> float:
        return self.cores * self.ghz * 1e9 * self.flops_per_cycle

    def describe(self) -> str:
        return (
            f"{self.cores} cores x {self.ghz:.2f} GHz x {self.flops_per_cycle} FLOP/cycle "
            f"({self.isa}) = {self.flops / 1e9:.0f} GFLOP/s fp32"
        )


def cpu_peak(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuPeak:
    """The CPU's fp32 peak from ``cpuinfo`` and the cores this process may run on.

    One FMA is two FLOPs per lane: AVX-512 FMA counts 16 lanes x 2 = 32 FLOP/cycle, AVX2 FMA
    8 x 2 = 16 (one FMA port; cores with two reach twice that), no FMA 8.
    """
    text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([0-9.]+)", text, re.MULTILINE)]
    found = re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE)
    flags = set(found.group(1).split()) if found else set()
    if {"avx512f", "fma"} <= flags:
        fpc, isa = 32, "AVX-512 FMA"
    elif {"avx2", "fma"} <= flags:
        fpc, isa = 16, "AVX2 FMA"
    else:
        fpc, isa = 8, "SSE/AVX, no FMA"
    cores = len(os.sched_getaffinity(0))
    return CpuPeak(cores, (sum(mhz) / len(mhz) / 1000) if mhz else 1.0, fpc, isa)


# -- onnxruntime ---------------------------------------------------------------------------------


def logistic_onnx(
    weights: Array, bias: float, *, name: str, input_name: str, output_name: str
) -> bytes:
    """The risk model as ONNX: ``input`` [N, F] -> MatMul -> Add(bias) -> Sigmoid -> ``output``.

    Raises ModuleNotFoundError when the ``onnx`` package is missing.
    """
    onnx = importlib.import_module("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    width = int(weights.size)
    w = numpy_helper.from_array(weights.reshape(width, 1).astype(np.float32), "weights")
    b = numpy_helper.from_array(np.array([[bias]], dtype=np.float32), "bias")
    nodes = [
        helper.make_node("MatMul", [input_name, "weights"], ["logit"], name="logit"),
        helper.make_node("Add", ["logit", "bias"], ["shifted"], name="shifted"),
        helper.make_node("Sigmoid", ["shifted"], [output_name], name="risk"),
    ]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(input_name, onnx.TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info(output_name, onnx.TensorProto.FLOAT, ["batch", 1])],
        initializer=[w, b],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # read by every onnxruntime of the last years
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def onnxruntime_contender(
    build: Callable[[], bytes], input_name: str, output_name: str, *, threads: int
) -> Contender:
    """onnxruntime, CPU execution provider, fp32, ``threads`` intra-op threads."""
    label = f"onnxruntime fp32 (CPU EP, {threads} intra-op threads)"
    try:
        ort = importlib.import_module("onnxruntime")
        model = build()
    except ModuleNotFoundError as exc:
        return Contender(label, None, f"{exc.name}: not installed, skipped")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def call(batch: Array) -> object:
        return session.run([output_name], {input_name: batch})[0]

    return Contender(label, call, f"onnxruntime {ort.__version__}")


# -- torch eager ---------------------------------------------------------------------------------


def _torch(threads: int) -> Any | None:
    """torch with ``threads`` intra-op threads, or None when it is not installed."""
    try:
        torch = importlib.import_module("torch")
    except ModuleNotFoundError:
        return None
    torch.set_num_threads(threads)
    return torch


def torch_contender(weights: Array, bias: float, *, threads: int) -> Contender:
    """``torch.nn.Linear`` + sigmoid with the same weights, eager, when torch is importable."""
    label = "torch eager fp32 (nn.Linear + sigmoid)"
    if (torch := _torch(threads)) is None:
        return Contender(label, None, "torch: not installed, skipped")
    layer = torch.nn.Linear(int(weights.size), 1)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weights.reshape(1, -1).astype(np.float32)))
        layer.bias.fill_(float(bias))
    layer.eval()

    def call(batch: Array) -> object:
        with torch.inference_mode():
            return torch.sigmoid(layer(torch.from_numpy(batch))).numpy()

    return Contender(label, call, f"torch {torch.__version__}")


def torch_module_contender(folder: Path, *, threads: int) -> Contender:
    """A reference model's own torch module (``torch_module.py``: ``load()``), eager; its first
    output, as the benchmark compares the first output."""
    label = "torch eager fp32 (the trained module)"
    if (torch := _torch(threads)) is None:
        return Contender(label, None, "torch: not installed, skipped")
    source = folder / "torch_module.py"
    spec = importlib.util.spec_from_file_location(f"{folder.name}_torch", source)
    if spec is None or spec.loader is None:
        return Contender(label, None, f"{folder.name}/torch_module.py cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.load()

    def call(batch: Array) -> object:
        with torch.inference_mode():
            out = net(torch.from_numpy(batch))
        return (out[0] if isinstance(out, tuple) else out).numpy()

    return Contender(label, call, f"torch {torch.__version__}")


# -- wrk -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    failures: int  # non-2xx answers plus socket errors


WRK_MISSING = "wrk not found (apt-get install wrk): the API throughput rows are skipped"


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_script(path: Path, body: bytes, token: str, headers: dict[str, str]) -> Path:
    """A wrk Lua script that POSTs ``body`` (read from a file beside the script, so binary
    tensor data goes through untouched) with a bearer token and ``headers``."""
    data = path.with_suffix(".body")
    data.write_bytes(body)
    lines = ['wrk.method = "POST"', f'local f = assert(io.open([==[{data}]==], "rb"))',
             'wrk.body = f:read("*a")', "f:close()",
             f'wrk.headers["Authorization"] = [==[Bearer {token}]==]']  # fmt: skip
    lines += [f'wrk.headers["{name}"] = [==[{value}]==]' for name, value in headers.items()]
    for text in (token, str(data), *headers.values()):
        if "]==]" in text:
            raise ValueError("a header, the token or the body's path would end a Lua string")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def run_wrk(
    wrk: str, url: str, script: Path, *, threads: int, connections: int, seconds: int
) -> WrkResult:
    """Run wrk with ``--latency`` and parse its report. Raises RuntimeError when wrk fails."""
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
           "-s", os.fspath(script), url]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()}")
    out = proc.stdout
    rate = re.search(r"Requests/sec:\s*([0-9.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rate is None or total is None:
        raise RuntimeError(f"cannot read wrk's report:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    sock = re.search(r"Socket errors:.*?(\d+).*?(\d+).*?(\d+).*?(\d+)", out)
    failures = int(non2xx.group(1)) if non2xx else 0
    failures += sum(int(g) for g in sock.groups()) if sock else 0
    return WrkResult(float(rate.group(1)), _wrk_ms(out, "50%"), _wrk_ms(out, "99%"),
                     int(total.group(1)), failures)  # fmt: skip


def _wrk_ms(out: str, quantile: str) -> float:
    found = re.search(rf"^\s*{re.escape(quantile)}\s+([0-9.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if found is None:
        return float("nan")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[found.group(2)]
    return float(found.group(1)) * scale
