"""The inference engine: OpenVINO models read from memory, compiled for a device, run on cases.

Models arrive decrypted in a ``bytearray`` (``appliance.trust.aead``); they are read from that
buffer and never written anywhere: no temporary IR, no model cache. The caller owns one
``ov.Core`` for its process and passes it in; this module keeps no state of its own.

OpenVINO reports every failure as a ``RuntimeError`` prefixed with C++ source locations. Each
public function wraps those once into an :class:`InferenceError` that keeps OpenVINO's own reason.

mypy: openvino ships ``.pyi`` files, but every one starts with ``# type: ignore`` and the package
has no ``py.typed`` marker, so mypy sees it as untyped (``Any``). Values that leave this module
are narrowed (``str``, ``list[str]``, numpy arrays) where they do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import openvino as ov  # type: ignore[import-untyped,unused-ignore]
import openvino.properties.hint as hints  # type: ignore[import-untyped,unused-ignore]
from openvino.exceptions import OVError  # type: ignore[import-untyped,unused-ignore]

from appliance.inference.errors import InferenceError

Progress = Callable[[int, int], None]
Array = npt.NDArray[Any]

# Cases per request when the model's batch axis is dynamic: large enough that per-request overhead
# vanishes for small models, small enough that a batch of 224x224 images stays a few tens of MB.
DEFAULT_BATCH = 32
# The weights buffer is shared, not copied; this attribute keeps it alive as long as the model
# (and every model compiled from it) is, because OpenVINO's constants point into it without
# holding a reference of their own.
_KEEP = "_appliance_weights"
_READ_HINT = (
    "The bundle may be for another OpenVINO version or damaged; ask the vendor for a compatible "
    "bundle."
)
_RUN_HINT = "The model and its manifest disagree; ask the vendor for a corrected bundle."
_DEVICE_HINT = (
    "Check that the device is present and its driver loaded (`appliance run` lists the devices "
    "it found), or run the model on CPU."
)


def openvino_version() -> str:
    """The OpenVINO runtime's build string, such as ``2026.4.1-22982-e213a147257-releases/...``."""
    return str(ov.get_version())


def available_devices(core: ov.Core) -> list[str]:
    """The device names OpenVINO offers on this box (``CPU``, ``GPU.0``, ``NPU``...)."""
    with _openvino_errors("the inference devices could not be listed", _DEVICE_HINT):
        return [str(name) for name in core.available_devices]


def load_model(
    xml: bytes | str, weights: bytes | bytearray | memoryview, *, core: ov.Core
) -> ov.Model:
    """Read an OpenVINO IR from memory: ``xml`` is model.xml, ``weights`` is model.bin.

    A writable buffer (``bytearray``, writable ``memoryview``) is shared with OpenVINO, not copied:
    it must not be changed or wiped while the returned model, or a model compiled from it, is in
    use; it cannot be resized meanwhile. Read-only ``bytes`` are copied once. Nothing is written to
    disk. Raises InferenceError when the IR cannot be read.
    """
    try:
        buffer = np.frombuffer(weights, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise InferenceError(
            f"the model weights are not a byte buffer: {exc}.", _READ_HINT
        ) from exc
    if not buffer.flags.writeable:
        buffer = buffer.copy()  # OpenVINO shares only writable numpy memory
    with _openvino_errors("the model could not be read", _READ_HINT):
        model = core.read_model(xml, ov.Tensor(buffer, shared_memory=True))
    setattr(model, _KEEP, buffer)
    return model


# Element types of quantised weights; f16/bf16 weights are compression, not an int8 model.
_INT8_WEIGHTS = frozenset({"i8", "u8", "i4", "u4"})


def is_int8(model: ov.Model) -> bool:
    """Whether ``model`` is a quantised IR: FakeQuantize ops or int8/uint8/int4 weight constants.

    Such a model is compiled with ``int8=True`` (no forced f32 precision hint).
    """
    for op in model.get_ops():
        kind = op.get_type_name()
        if kind == "FakeQuantize":
            return True
        if kind == "Constant" and op.get_output_element_type(0).get_type_name() in _INT8_WEIGHTS:
            return True
    return False


def compile(
    model: ov.Model,
    device: str = "CPU",
    *,
    core: ov.Core,
    int8: bool | None = None,
    latency: bool = True,
) -> ov.CompiledModel:
    """Compile ``model`` for ``device``.

    Inference runs in f32 unless ``int8`` (by default: whether the model is a quantised IR,
    :func:`is_int8`): on CPUs with AMX or AVX512-BF16 OpenVINO's default is
    bf16, faster on big models but only about three significant digits, so a model validated by
    its vendor in f32 would be judged on other numbers (the risk demo's AUC moves from 0.9092 to
    0.9090 in bf16). ``int8=True`` is for quantised
    IRs: their quantised layers run in int8 whatever the hint, and the rest keeps the device's
    default precision as the vendor's int8 build expects. ``latency`` asks for one request at a
    time as fast as possible; ``latency=False`` for throughput over many parallel requests.
    Raises InferenceError when the device is missing or refuses the model.
    """
    with _openvino_errors(f"the model could not be compiled for {device}", _DEVICE_HINT):
        quantised = is_int8(model) if int8 is None else int8
        compiled = core.compile_model(model, device, _settings(int8=quantised, latency=latency))
    setattr(compiled, _KEEP, getattr(model, _KEEP, None))
    return compiled


def run_cases(
    compiled: ov.CompiledModel,
    inputs: Mapping[str, Array],
    output: str,
    *,
    progress: Progress | None = None,
) -> Array:
    """Run every case through ``compiled`` and return output ``output`` for all cases.

    ``inputs`` maps each model input name to an array whose first axis is the case; all must have
    the same number of cases, and a case's shape must fit the model's input without its batch
    axis. Cases go in batches over parallel requests: the model's batch size when it is fixed
    (the last batch padded by repeating its last case), :data:`DEFAULT_BATCH` when it is dynamic.
    The result's first axis is the case. ``progress(done, total)`` is called from the calling
    thread as batches complete, last with ``(total, total)``. Raises InferenceError.
    """
    total = _case_count(inputs)
    with _openvino_errors("the model could not be run", _RUN_HINT):
        _check_names(compiled, inputs, output)
        size, fixed = _batch_size(compiled)
        port = compiled.output(output)
        queue = ov.AsyncInferQueue(compiled, 0)  # 0: the device's optimal number of requests
    # No completion callback: Python code running on OpenVINO's worker threads can trigger the
    # garbage collector there, and a compiled model it frees then joins its own thread
    # (std::terminate, "Resource deadlock avoided"). So the batches go in waves of one per
    # request, and each wave's outputs are read here, by the queue's userdata, after wait_all.
    results: dict[int, Array] = {}
    starts = list(range(0, total, size))
    reported = 0
    with _openvino_errors("inference failed", _RUN_HINT):
        for wave in range(0, len(starts), len(queue)):
            this_wave = starts[wave : wave + len(queue)]
            for start in this_wave:
                batch = {name: _batch(array, start, size, fixed) for name, array in inputs.items()}
                queue.start_async(batch, (start, min(size, total - start)))
            queue.wait_all()
            for index, userdata in enumerate(queue.userdata):
                if userdata is None or userdata[0] not in this_wave:
                    continue  # a request the last, shorter wave did not use
                start, count = userdata
                # Each request reuses its output memory: copy before the next wave.
                results[start] = np.array(queue[index].get_tensor(port).data[:count])
            reported = _report(progress, results, reported, total)
    if len(results) != -(-total // size):
        raise InferenceError("inference failed: some batches returned no result.", _RUN_HINT)
    if progress is not None and reported < total:
        progress(total, total)
    return np.concatenate([results[start] for start in sorted(results)])


def _settings(*, int8: bool, latency: bool) -> dict[str, Any]:
    config: dict[str, Any] = {
        hints.performance_mode: (
            hints.PerformanceMode.LATENCY if latency else hints.PerformanceMode.THROUGHPUT
        )
    }
    if not int8:
        config[hints.inference_precision] = ov.Type.f32
    return config


def export_compiled(compiled: ov.CompiledModel) -> bytes:
    """The compiled model as OpenVINO's export blob (it holds the weights: encrypt it)."""
    with _openvino_errors("the compiled model could not be exported", _DEVICE_HINT):
        blob = compiled.export_model()
        # bytes in older releases, a BytesIO in 2026.x
        return blob.getvalue() if hasattr(blob, "getvalue") else bytes(blob)


def import_compiled(
    blob: Any, device: str, *, core: ov.Core, int8: bool = False, latency: bool = True
) -> ov.CompiledModel:
    """A compiled model from an export blob made for the same device and OpenVINO version.

    The settings are not all in the blob (the precision hint is not): give the ones it was
    compiled with, or an f32 model comes back running in bf16.
    """
    with _openvino_errors("the compiled model could not be imported", _READ_HINT):
        return core.import_model(blob, device, _settings(int8=int8, latency=latency))


def infer(
    compiled: ov.CompiledModel,
    inputs: Mapping[str, Array],
    request: Any | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, Array]:
    """One synchronous inference on ``request`` (an infer request of ``compiled`` that no other
    thread uses meanwhile), or on a new one: safe from many threads at once either way.

    Returns every output by name (``names``, one per output, as :func:`output_names` gives them;
    by default each output's first name), copied out of the request's memory. Raises
    InferenceError.
    """
    ports = compiled.outputs
    keys = names if names is not None else [port.get_any_name() for port in ports]
    with _openvino_errors("inference failed", _RUN_HINT):
        if request is None:
            request = compiled.create_infer_request()
        # Inputs shared, not copied (OpenVINO copies any it cannot share: wrong dtype, not
        # contiguous); outputs not copied into the dict infer returns: copied once, below.
        request.infer(dict(inputs), share_inputs=True, share_outputs=True)
        return {
            key: np.array(request.get_tensor(port).data)
            for key, port in zip(keys, ports, strict=True)
        }


def output_names(compiled: ov.CompiledModel, declared: Collection[str]) -> list[str]:
    """Each output's name, in order: the one of ``declared`` (the manifest's output names) it
    answers to, else its first name.

    A compiled output can answer to more than one name: when the CPU plugin fuses a model's last
    ops, the output keeps the name of the tensor it replaced too (the imaging model's heat map is
    also ``/readout/DepthToSpace_output_0``), and ``get_any_name`` may return that one.
    """
    return [
        next((name for name in sorted(port.get_names()) if name in declared), port.get_any_name())
        for port in compiled.outputs
    ]


def _case_count(inputs: Mapping[str, Array]) -> int:
    counts = {len(array) for array in inputs.values()}
    if len(counts) != 1 or 0 in counts:
        sizes = ", ".join(f"{name}: {len(array)}" for name, array in inputs.items())
        raise InferenceError(
            f"the inputs must hold the same, non-zero number of cases ({sizes or 'no inputs'}).",
            "Give every model input one array with one row per case.",
        )
    return counts.pop()


def _check_names(compiled: ov.CompiledModel, inputs: Mapping[str, Array], output: str) -> None:
    have = {str(n) for port in compiled.inputs for n in port.get_names()}
    outs = {str(n) for port in compiled.outputs for n in port.get_names()}
    missing = sorted(set(inputs) - have) + ([output] if output not in outs else [])
    if missing or len(inputs) != len(compiled.inputs):
        raise InferenceError(
            f"the model's inputs ({', '.join(sorted(have))}) and outputs "
            f"({', '.join(sorted(outs))}) do not match the ones asked for "
            f"({', '.join(sorted(inputs))} -> {output}).",
            _RUN_HINT,
        )


def _batch_size(compiled: ov.CompiledModel) -> tuple[int, bool]:
    """The cases per request, and whether the model fixes that number (padding needed)."""
    sizes = set()
    for port in compiled.inputs:
        shape = port.get_partial_shape()
        if shape.rank.is_static and shape.rank.get_length() == 0:
            raise InferenceError(
                f"the model input {port.get_any_name()} is a scalar: it has no batch axis.",
                "Ask the vendor for a model whose inputs have a batch (case) axis first.",
            )
        if shape.rank.is_static and shape[0].is_static:
            sizes.add(int(shape[0].get_length()))
    if len(sizes) > 1:
        raise InferenceError(
            f"the model's inputs have different fixed batch sizes ({sorted(sizes)}).",
            "Ask the vendor for a model whose inputs share one batch axis.",
        )
    return (sizes.pop(), True) if sizes else (DEFAULT_BATCH, False)


def _batch(array: Array, start: int, size: int, fixed: bool) -> Array:
    chunk = array[start : start + size]
    if fixed and len(chunk) < size:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)])
    return chunk


def _report(
    progress: Progress | None, results: Mapping[int, Array], reported: int, total: int
) -> int:
    if progress is None:
        return reported
    done = min(total, sum(len(r) for r in results.values()))
    if done > reported:
        progress(done, total)
    return max(done, reported)


@contextlib.contextmanager
def _openvino_errors(what: str, hint: str) -> Iterator[None]:
    """Wrap OpenVINO's exceptions into one InferenceError: ``<what>: <OpenVINO's reason>.``"""
    try:
        yield
    except (RuntimeError, OVError) as exc:
        raise InferenceError(f"{what}: {_reason(exc)}.", hint) from exc


def _reason(exc: BaseException) -> str:
    """OpenVINO's own words without the C++ locations ("Exception from src/...cpp:105:")."""
    lines = [line.strip() for line in str(exc).splitlines()]
    kept = [line for line in lines if line and not line.startswith("Exception from ")]
    return (kept[-1] if kept else type(exc).__name__).rstrip(".!")
