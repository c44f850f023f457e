"""Benchmark of the notes pipeline: where a note's time goes, and the tagger on two runtimes.

Builds nothing: it reads the committed ``models/notes-phi`` IR and ONNX (the same weights) and
synthetic held-out notes (``provisioning.notesdata``, seeded). For a typical note (~1.5 KB) it
times each stage (tokenize + features, the tagger on OpenVINO f32, recognizers, merge, ConText)
and the whole pipeline; then the tagger alone on OpenVINO f32 against onnxruntime fp32 on the
same token batch, and the pipeline on a 200 KB note. Prints a table, then ``name: value`` lines.
Asserts nothing: timings on a shared machine are information, not a test.

Run ``.venv/bin/python bench/notes.py``.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import openvino as ov

from appliance.notes.context import ConText
from appliance.notes.pipeline import NotesPipeline
from appliance.notes.recognizers import recognize
from appliance.notes.tokens import features, tokenize
from provisioning.notesdata import generate
from provisioning.notetemplates import HELD_OUT

MODEL = Path(__file__).resolve().parent.parent / "models" / "notes-phi"
REPEAT = 30


def timed(fn: Callable[[], object], repeat: int = REPEAT) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def row(name: str, ms: list[float]) -> tuple[str, float, float]:
    return name, statistics.median(ms), float(np.percentile(ms, 99))


def main() -> None:
    core = ov.Core()
    core.set_property("CPU", {"INFERENCE_NUM_THREADS": 2})
    compiled = core.compile_model(
        core.read_model(MODEL / "model.xml"), "CPU",
        {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"},
    )  # fmt: skip
    request = compiled.create_infer_request()

    def ov_infer(ids: np.ndarray) -> np.ndarray:
        return np.asarray(request.infer({0: ids})[0])

    notes = list(generate(HELD_OUT, 20, 99))
    text = notes[0].text
    tokens = tokenize(text)
    ids = features(tokens)
    context = ConText()
    pipeline = NotesPipeline(ov_infer, context)
    rows = [
        row(f"tokenize + features ({len(tokens)} tokens)", timed(lambda: features(tokenize(text)))),
        row("tagger, OpenVINO f32", timed(lambda: ov_infer(ids))),
        row("recognizers", timed(lambda: recognize(text))),
        row("ConText mentions", timed(lambda: context.mentions(text))),
        row(f"whole pipeline ({len(text)} chars)", timed(lambda: pipeline.process(text))),
    ]
    batch = np.concatenate([features(tokenize(n.text)) for n in notes])[:2048]
    ov_batch = timed(lambda: ov_infer(batch))
    rows.append(row(f"tagger, OpenVINO f32, {len(batch)} tokens", ov_batch))
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        session = ort.InferenceSession(str(MODEL / "model.onnx"), options,
                                       providers=["CPUExecutionProvider"])  # fmt: skip
        ort_batch = timed(lambda: session.run(None, {"features": batch}))
        rows.append(row(f"tagger, onnxruntime fp32, {len(batch)} tokens", ort_batch))
        ratio = statistics.median(ort_batch) / statistics.median(ov_batch)
    except ImportError:
        ratio = float("nan")
    big = "\n".join(n.text for n in generate(HELD_OUT, 150, 98))
    rows.append(row(f"whole pipeline ({len(big) // 1000} KB note)",
                    timed(lambda: pipeline.process(big), repeat=3)))  # fmt: skip

    width = max(len(r[0]) for r in rows)
    print(f"{'stage':<{width}}  {'p50 ms':>9}  {'p99 ms':>9}")
    for name, p50, p99 in rows:
        print(f"{name:<{width}}  {p50:9.3f}  {p99:9.3f}")
    print(f"notes_pipeline_ms_p50: {rows[4][1]:.3f}")
    print(f"notes_tagger_ort_vs_ov_time_ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
