"""Dynamic batching: concurrent calls run as one batch, and each gets exactly its own outputs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import openvino as ov
import pytest

from appliance.inference import engine
from appliance.inference.batching import DEFAULT_MAX_CASES, Batcher, exact_in_batches

Array = npt.NDArray[Any]
MODELS = Path(__file__).resolve().parents[2] / "models"


class Model:
    """A slow model: doubles ``x``, adds ``y``, and records the size of every batch it ran. An
    input holding a negative number fails the whole call, as a model that rejects it would."""

    def __init__(self, seconds: float = 0.02) -> None:
        self.seconds = seconds
        self.batches: list[int] = []
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def __call__(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(self.seconds)
            if (inputs["x"] < 0).any():
                raise ValueError("negative input")
            self.batches.append(len(inputs["x"]))
            return {"double": inputs["x"] * 2, "sum": inputs["x"].sum(axis=1) + inputs["y"]}
        finally:
            with self.lock:
                self.running -= 1


def case(i: int, cases: int = 1, width: int = 3) -> dict[str, Array]:
    x = np.arange(cases * width, dtype=np.float32).reshape(cases, width) + 100 * i
    return {"x": x, "y": np.full(cases, i, dtype=np.float32)}


def concurrently(call: Callable[[int], Any], n: int) -> list[Any]:
    """``call(i)`` for i in 0..n-1, from n threads started together; results or exceptions."""
    start = threading.Barrier(n)

    def one(i: int) -> Any:
        start.wait()
        try:
            return call(i)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_concurrent_calls_share_batches_and_each_gets_its_own_outputs() -> None:
    model = Model()
    batcher = Batcher(model, max_cases=16)
    results = concurrently(lambda i: batcher.infer(case(i, cases=1 + i % 3)), 24)
    for i, out in enumerate(results):
        x = case(i, cases=1 + i % 3)["x"]
        np.testing.assert_array_equal(out["double"], x * 2)
        np.testing.assert_array_equal(out["sum"], x.sum(axis=1) + i)
    assert max(model.batches) > 1, model.batches  # they did run together
    assert max(model.batches) <= 16 and model.most_at_once == 1
    assert sum(model.batches) == sum(1 + i % 3 for i in range(24))
    assert batcher.calls == 24 and batcher.batches == len(model.batches) < 24


def test_a_call_alone_runs_at_once_in_its_own_thread() -> None:
    threads: list[str] = []

    def run(inputs: Mapping[str, Array]) -> dict[str, Array]:
        threads.append(threading.current_thread().name)
        return {"double": inputs["x"] * 2}

    out = Batcher(run).infer(case(1))
    assert threads == [threading.current_thread().name]
    np.testing.assert_array_equal(out["double"], case(1)["x"] * 2)


def test_a_bad_input_fails_only_its_own_call() -> None:
    """The batch that holds it fails as a whole; its calls are run again one by one."""
    model = Model()
    batcher = Batcher(model)

    def call(i: int) -> dict[str, Array]:
        inputs = case(i)
        if i == 5:
            inputs["x"] = -inputs["x"] - 1
        return batcher.infer(inputs)

    results = concurrently(call, 12)
    assert isinstance(results[5], ValueError) and "negative input" in str(results[5])
    for i, out in enumerate(results):
        if i != 5:
            np.testing.assert_array_equal(out["double"], case(i)["x"] * 2)


def test_calls_of_other_case_shapes_or_dtypes_are_not_mixed() -> None:
    model = Model()
    batcher = Batcher(model)

    def call(i: int) -> dict[str, Array]:
        inputs = case(i, width=3 + i % 2)
        if i % 3 == 0:
            inputs["y"] = inputs["y"].astype(np.float64)
        return batcher.infer(inputs)

    results = concurrently(call, 18)
    for i, out in enumerate(results):
        assert not isinstance(out, Exception), out
        np.testing.assert_array_equal(out["double"], case(i, width=3 + i % 2)["x"] * 2)
        assert out["sum"].dtype == (np.float64 if i % 3 == 0 else np.float32)


def test_inputs_of_unequal_case_counts_run_alone() -> None:
    """Two calls of 2 + 3 and 3 + 2 cases would join as 5 + 5 and be split wrongly: such a call
    runs alone, and the model answers it as it would (here: refuses it)."""
    seen: list[tuple[int, int]] = []

    def run(inputs: Mapping[str, Array]) -> dict[str, Array]:
        seen.append((len(inputs["x"]), len(inputs["y"])))
        time.sleep(0.02)
        if len(inputs["x"]) != len(inputs["y"]):
            raise ValueError("inputs disagree on the number of cases")
        return {"sum": inputs["x"].sum(axis=1) + inputs["y"]}

    batcher = Batcher(run)

    def call(i: int) -> dict[str, Array]:
        inputs = case(i, cases=2 + i % 2)
        if i % 4 == 0:
            inputs["y"] = np.zeros(5 - len(inputs["x"]), dtype=np.float32)
        return batcher.infer(inputs)

    results = concurrently(call, 12)
    for i, out in enumerate(results):
        if i % 4 == 0:
            assert isinstance(out, ValueError)
        else:
            x = case(i, cases=2 + i % 2)["x"]
            np.testing.assert_array_equal(out["sum"], x.sum(axis=1) + i)
    assert all(x == y for x, y in seen if (x, y) not in ((2, 3), (3, 2)))


def test_slots_bound_the_batches_running_at_once() -> None:
    model = Model(seconds=0.05)
    batcher = Batcher(model, slots=2, max_cases=2)
    results = concurrently(lambda i: batcher.infer(case(i)), 12)
    assert all(not isinstance(r, Exception) for r in results)
    assert model.most_at_once == 2 and max(model.batches) == 2


def _cases(name: str, n: int) -> Array:
    rng = np.random.default_rng(7)
    if name == "notes-phi":  # hashed feature ids of n tokens
        return rng.integers(0, 4096, (n, 1, 27)).astype(np.int64)
    if name == "breast-cancer-risk":
        return (rng.random((n, 1, 30), dtype=np.float32) * 20).astype(np.float32)
    return rng.random((n, 1, 1, 128, 128), dtype=np.float32)


@pytest.mark.parametrize("name", ["imaging-anomaly", "notes-phi", "breast-cancer-risk"])
def test_a_committed_model_answers_a_case_in_a_batch_as_it_answers_it_alone(name: str) -> None:
    """Bit for bit: a result must not depend on which other requests arrived with it."""
    core = ov.Core()
    folder = MODELS / name
    model = engine.load_model(
        (folder / "model.xml").read_bytes(), bytearray((folder / "model.bin").read_bytes()),
        core=core,
    )  # fmt: skip
    compiled = engine.compile(model, core=core)
    key = model.inputs[0].get_any_name()

    def run(inputs: Mapping[str, Array]) -> dict[str, Array]:
        return engine.infer(compiled, inputs)

    if not exact_in_batches(run, {key: _cases(name, DEFAULT_MAX_CASES)[:, 0]}):
        pytest.skip(f"on this CPU a case of {name} in a batch does not answer bit for bit as "
                    "alone: the box serves it one request at a time")  # fmt: skip
    cases = _cases(name, 16)
    alone = [engine.infer(compiled, {key: one}) for one in cases]
    batcher = Batcher(run)
    together = concurrently(lambda i: batcher.infer({key: cases[i]}), 16)
    assert batcher.batches < 16
    for one, other in zip(alone, together, strict=True):
        assert not isinstance(other, Exception), other
        assert one.keys() == other.keys()
        for out in one:
            np.testing.assert_array_equal(one[out], other[out])


def test_a_model_whose_batches_answer_otherwise_is_found_out() -> None:
    """A model that answers a case in a batch otherwise than alone (here: scaled by the batch
    size) is not batched; nor is one that fails."""
    cases = case(0, cases=DEFAULT_MAX_CASES)
    assert exact_in_batches(lambda x: {"y": x["x"] * 2}, cases)
    assert not exact_in_batches(lambda x: {"y": x["x"] * len(x["x"])}, cases)
    assert not exact_in_batches(lambda x: {"y": x["x"] + 1e-7 * (len(x["x"]) > 2)}, cases)

    def fails(x: Mapping[str, Array]) -> dict[str, Array]:
        raise RuntimeError("no")

    assert not exact_in_batches(fails, cases)
