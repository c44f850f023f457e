"""Dynamic batching: calls that arrive while the model is busy run together, as one batch.

At 16 concurrent clients a model with a batch axis runs faster per case on a batch than on 16
single cases (for the imaging model on this CPU, see bench/inference.py). No call waits for
company: a call that finds a free slot runs at once, with whatever calls are already waiting
and fit with it (same input names, dtypes and shapes but the case axis) up to ``max_cases``.
Calls that find every slot busy wait; when a batch ends, the first of them runs the next batch
in its own thread (the leader/follower pattern: no thread of the batcher's own, no hop).

A batch that fails is run again case by case, so that a call only ever fails for its own input.
A model is batched only where :func:`exact_in_batches` finds that a case in a batch answers bit
for bit as it does alone, so that no result depends on which other requests came with it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
Outputs = dict[str, Array]

DEFAULT_MAX_CASES = 16
# Batch sizes tried by exact_in_batches: kernels are chosen by shape, so small, odd and full ones.
_TRIED = (2, 3, DEFAULT_MAX_CASES)


def exact_in_batches(
    run: Callable[[Mapping[str, Array]], Outputs], cases: Mapping[str, Array]
) -> bool:
    """Whether ``run`` answers each of ``cases`` (DEFAULT_MAX_CASES of them, case axis first)
    in batches of 2, 3 and 16 exactly as it answers it alone; False if any run fails."""
    try:
        alone = [run({k: v[i : i + 1] for k, v in cases.items()}) for i in range(max(_TRIED))]
        for size in _TRIED:
            together = run({k: v[:size] for k, v in cases.items()})
            for i in range(size):
                for key, value in alone[i].items():
                    if not np.array_equal(together[key][i : i + 1], value):
                        return False
    except Exception:
        return False
    return True


class _Call:
    __slots__ = ("cases", "done", "error", "inputs", "key", "lead", "result", "woken")

    def __init__(self, inputs: Mapping[str, Array]) -> None:
        self.inputs = inputs
        self.key = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))
        counts = {v.shape[0] if v.ndim else 0 for v in inputs.values()}
        # 0: not batched (no inputs, no cases, or inputs of unequal case counts, which the model
        # refuses alone but which joined with another call's could line up wrongly).
        self.cases = counts.pop() if len(counts) == 1 else 0
        self.woken = threading.Event()
        self.lead = False  # woken to run the next batch rather than with a result
        self.done = False
        self.result: Outputs | None = None
        self.error: BaseException | None = None


class Batcher:
    """Runs ``run`` (inputs to outputs, case axis first on each) on batches of concurrent calls.

    ``slots`` batches may run at once (the compiled model's optimal number of infer requests).
    """

    def __init__(
        self,
        run: Callable[[Mapping[str, Array]], Outputs],
        *,
        slots: int = 1,
        max_cases: int = DEFAULT_MAX_CASES,
    ) -> None:
        if slots < 1 or max_cases < 1:
            raise ValueError("slots and max_cases must be >= 1")
        self._run = run
        self._max = max_cases
        self._lock = threading.Lock()
        self._waiting: list[_Call] = []
        self._free = slots
        self.batches = 0
        self.calls = 0

    def infer(self, inputs: Mapping[str, Array]) -> Outputs:
        """The outputs of ``inputs`` alone (sliced out of the batch they ran in)."""
        call = _Call(inputs)
        if call.cases == 0:
            return self._run(inputs)
        with self._lock:
            if self._free:
                self._free -= 1
                batch = self._take(call)
            else:
                self._waiting.append(call)
                batch = None
        while batch is None:
            call.woken.wait()
            call.woken.clear()
            if call.done:
                break
            with self._lock:  # woken to lead: this call is still waiting, so it runs now
                call.lead = False
                self._waiting.remove(call)
                batch = self._take(call)
        if batch is not None:
            try:
                self._complete(batch)
            except BaseException as exc:  # (KeyboardInterrupt in the main thread) no call hangs
                for c in batch:
                    if not c.done:
                        c.error = exc
                        self._finish(c)
                raise
            finally:
                self._hand_on()
        if call.error is not None:
            raise call.error
        if call.result is None:
            raise RuntimeError("batching: a call ended with neither outputs nor an error")
        return call.result

    def _take(self, first: _Call) -> list[_Call]:
        """``first`` and the waiting calls that fit with it, oldest first (lock held). A call
        woken to lead is left alone: it runs its own batch."""
        batch, cases = [first], first.cases
        for other in list(self._waiting):
            fits = other.key == first.key and cases + other.cases <= self._max
            if fits and not other.lead:
                batch.append(other)
                cases += other.cases
                self._waiting.remove(other)
        return batch

    def _hand_on(self) -> None:
        """Wake the oldest waiting call to run the next batch, or free the slot."""
        with self._lock:
            nxt = next((c for c in self._waiting if not c.lead), None)
            if nxt is None:
                self._free += 1
                return
            nxt.lead = True
        nxt.woken.set()

    def _complete(self, batch: list[_Call]) -> None:
        self.batches += 1
        self.calls += len(batch)
        outputs = self._together(batch) if len(batch) > 1 else None
        if outputs is None:  # one call, or a batch that failed: each alone
            for c in batch:
                self._settle(c)
            return
        start = 0
        for c in batch:
            c.result = {k: v[start : start + c.cases].copy() for k, v in outputs.items()}
            start += c.cases
            self._finish(c)

    def _together(self, batch: list[_Call]) -> Outputs | None:
        """The batch's outputs, or None when it failed as a whole (so that a call fails only
        for its own input) or an output has no case axis to split."""
        try:
            names = list(batch[0].inputs)
            joined = {name: np.concatenate([c.inputs[name] for c in batch]) for name in names}
            outputs = self._run(joined)
        except Exception:
            return None
        total = sum(c.cases for c in batch)
        if any(v.ndim == 0 or v.shape[0] != total for v in outputs.values()):
            return None
        return outputs

    def _settle(self, call: _Call) -> None:
        try:
            call.result = self._run(call.inputs)
        except BaseException as exc:
            call.error = exc
        self._finish(call)

    @staticmethod
    def _finish(call: _Call) -> None:
        call.done = True
        call.woken.set()
