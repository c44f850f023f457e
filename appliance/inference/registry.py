"""The models this process serves: loaded from the encrypted store, compiled, swapped hot.

Each served model is an immutable :class:`ServedModel` (compiled model, manifest, provenance).
A request takes a reference to the current one and runs on it to the end; when the update agent
commits a new slot (the model's ``state.json`` generation changes), :meth:`ModelRegistry.refresh`
compiles the new slot and replaces the reference. Requests in flight finish on the old model, which
is freed when the last of them drops it; none fails because of the swap.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.errors import ApplianceError
from appliance.inference import engine
from appliance.inference.batching import DEFAULT_MAX_CASES, Batcher, exact_in_batches
from appliance.inference.cache import CompileCache
from appliance.store.slots import ModelStore
from appliance.updates.manifest import MANIFEST_NAME, MODEL_BIN, MODEL_XML, Manifest, parse_manifest

log = logging.getLogger(__name__)
Array = npt.NDArray[Any]


class ModelNotFoundError(ApplianceError):
    """No model of that name (or version) is served."""


@dataclass(frozen=True)
class Provenance:
    """What every result carries: which model, from which bundle, on which device and runtime."""

    model_name: str
    model_version: str
    bundle_sha256: str
    device: str
    openvino_version: str
    slot: str

    def as_dict(self) -> dict[str, str]:
        return {
            "model_name": self.model_name, "model_version": self.model_version,
            "bundle_sha256": self.bundle_sha256, "device": self.device,
            "openvino_version": self.openvino_version, "slot": self.slot,
        }  # fmt: skip


@dataclass(frozen=True)
class ServedModel:
    manifest: Manifest
    provenance: Provenance
    compiled: Any  # ov.CompiledModel
    generation: int
    load_seconds: float

    # Idle infer requests of this model. Making one per call cost 0.06 ms of a 0.08 ms batch-1
    # inference (bench/inference.py); the pool holds at most as many as ran at once.
    _idle: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue, repr=False,
                                          compare=False)  # fmt: skip

    @functools.cached_property
    def output_names(self) -> list[str]:
        """The outputs' names as the manifest gives them (see engine.output_names), in order."""
        return engine.output_names(self.compiled, {spec.name for spec in self.manifest.outputs})

    # Concurrent calls batched together (batching.py), when every input and output of the
    # manifest has a case axis of any size; None for a model with a fixed batch.
    _batcher: Batcher | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        tensors = (*self.manifest.inputs, *self.manifest.outputs)
        if not all(spec.shape and spec.shape[0] == -1 for spec in tensors):
            return
        name = self.manifest.name
        try:
            cases = _example_cases(self.compiled)
        except Exception:  # an input it cannot make (dynamic rank, strings): no batching
            cases = None
        if cases is not None and exact_in_batches(self._infer_one, cases):
            object.__setattr__(self, "_batcher", Batcher(self._infer_one, slots=_slots(self)))
            log.info("%s: concurrent requests run in batches (a case answers bit for bit as "
                     "alone on %s)", name, self.provenance.device)  # fmt: skip
        else:
            log.info("%s: requests run one by one: on %s a case in a batch does not answer "
                     "bit for bit as alone", name, self.provenance.device)  # fmt: skip

    def infer(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """One synchronous inference, outputs named as in the manifest; safe from many threads.
        Calls made while the model is busy run together as one batch, each getting its own
        cases' outputs (see batching.py)."""
        if self._batcher is not None:
            return self._batcher.infer(inputs)
        return self._infer_one(inputs)

    def _infer_one(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """Inference on an idle infer request of the pool (one per call running at once)."""
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        outputs = engine.infer(self.compiled, inputs, request, self.output_names)
        self._idle.put(request)  # not after a failure: a request in an unknown state is dropped
        return outputs


def _example_cases(compiled: Any) -> dict[str, Array]:
    """Seeded inputs for DEFAULT_MAX_CASES cases (a dynamic case dimension of size 1): numbers
    in [0, 1), small integers (ids into any table), alternating booleans."""
    rng = np.random.default_rng(0)
    cases: dict[str, Array] = {}
    for port in compiled.inputs:
        dims = list(port.get_partial_shape())[1:]
        shape = (DEFAULT_MAX_CASES, *(d.get_length() if d.is_static else 1 for d in dims))
        dtype = np.dtype(port.get_element_type().to_dtype())
        if dtype.kind == "f":
            cases[port.get_any_name()] = rng.random(shape).astype(dtype)
        elif dtype.kind in "iu":
            cases[port.get_any_name()] = rng.integers(0, 16, shape).astype(dtype)
        else:
            cases[port.get_any_name()] = (
                (np.arange(np.prod(shape)) % 2).reshape(shape).astype(dtype)
            )
    return cases


def _slots(model: ServedModel) -> int:
    """How many batches may run at once: the device's optimal number of infer requests (1 for
    the CPU under the LATENCY hint, whose one stream runs one request at a time)."""
    try:
        return max(1, int(model.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    except Exception:  # a device that does not say: one batch at a time
        return 1


DeviceChooser = Callable[[Manifest], str]


class ModelRegistry:
    """Every model with an active slot in ``store``, compiled for the device ``choose`` picks."""

    def __init__(
        self,
        store: ModelStore,
        key: Callable[[], bytes],
        core: Any,
        choose: DeviceChooser,
        cache_dir: Path | None = None,
    ) -> None:
        self._store = store
        self._cache_dir = cache_dir
        self._key = key
        self._core = core
        self._choose = choose
        self._models: dict[str, ServedModel] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return sorted(self._models)

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The model served under ``name`` (and ``version`` if given)."""
        model = self._models.get(name)
        if model is None or (version is not None and str(model.manifest.version) != version):
            served = ", ".join(f"{m.manifest.name} {m.manifest.version}" for m in self.all())
            raise ModelNotFoundError(
                f"no model '{name}'{f' version {version}' if version else ''} is served.",
                f"Served: {served or 'none'}. Install one with `appliance update install`.",
            )
        return model

    def all(self) -> list[ServedModel]:
        return [self._models[n] for n in sorted(self._models)]

    def refresh(self) -> list[str]:
        """Load every model whose active slot changed since the last call; return their names.

        A model that fails to load keeps serving its previous version (the failure is logged).
        """
        changed = []
        for name in self._store.models():
            state = self._store.state(name)
            current = self._models.get(name)
            if state.active is None or (current and current.generation == state.generation):
                continue
            try:
                model = self._load(name, state.generation)
            except ApplianceError as exc:
                log.warning("inference: cannot load model %s, keeping the old one: %s", name, exc)
                continue
            with self._lock:
                self._models[name] = model
            changed.append(name)
            log.info("inference: serving %s %s on %s (generation %d, %.2f s)", name,
                     model.manifest.version, model.provenance.device, state.generation,
                     model.load_seconds)  # fmt: skip
        return changed

    def _load(self, name: str, generation: int) -> ServedModel:
        start = time.perf_counter()
        key = self._key()
        loaded = self._store.load(name, key)
        manifest = parse_manifest(bytes(loaded.files[MANIFEST_NAME]))
        device = self._choose(manifest)
        cache = CompileCache(self._cache_dir, key) if self._cache_dir else None
        # The IR is read before the cache is asked: whether it is int8 is part of the cache key
        # and of the import settings (the precision hint is not in an exported blob).
        model = engine.load_model(
            bytes(loaded.files[MODEL_XML]), loaded.files[MODEL_BIN], core=self._core
        )
        int8 = engine.is_int8(model)
        settings = "int8-latency" if int8 else "f32-latency"
        entry = CompileCache.entry(loaded.info.bundle_sha256, name, device, settings)
        compiled = cache.load(entry, device, core=self._core, int8=int8) if cache else None
        if compiled is None:
            compiled = engine.compile(model, device, core=self._core, int8=int8, latency=True)
            if cache:
                cache.store(entry, compiled)
        provenance = Provenance(
            manifest.name, str(manifest.version), loaded.info.bundle_sha256, device,
            engine.openvino_version(), str(loaded.slot),
        )  # fmt: skip
        return ServedModel(manifest, provenance, compiled, generation, time.perf_counter() - start)
