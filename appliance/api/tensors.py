"""KServe v2 JSON tensors <-> numpy, checked against the model's manifest. Pure functions.

Every refusal is an :class:`InputError` whose message names the tensor and what is wrong with it,
so that a client sees "input 'features' has shape [2, 7]; the model takes [-1, 8]" and not a 500.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.errors import ApplianceError
from appliance.updates.manifest import Manifest, TensorSpec

Array = npt.NDArray[Any]
MAX_ELEMENTS = 16 << 20  # per input: a 4k x 4k image; bigger inputs go through the study path

# KServe v2 datatypes and the manifest's (OpenVINO) element types.
V2_TO_NUMPY: Mapping[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}  # fmt: skip
MANIFEST_TO_V2: Mapping[str, str] = {
    "f32": "FP32", "f16": "FP16", "i64": "INT64", "i32": "INT32", "i16": "INT16", "i8": "INT8",
    "u64": "UINT64", "u32": "UINT32", "u16": "UINT16", "u8": "UINT8", "boolean": "BOOL",
    "bf16": "FP32",
}  # fmt: skip
NUMPY_TO_V2: Mapping[str, str] = {np.dtype(t).str: n for n, t in V2_TO_NUMPY.items()}


class InputError(ApplianceError):
    """A request's tensors do not fit the model."""


def v2_type(spec: TensorSpec) -> str:
    return MANIFEST_TO_V2.get(str(spec.dtype), "BYTES")


def decode_inputs(manifest: Manifest, inputs: Sequence[Mapping[str, Any]]) -> dict[str, Array]:
    """Turn the request's ``inputs`` into arrays for the model, or raise InputError."""
    specs = {spec.name: spec for spec in manifest.inputs}
    given = [str(item.get("name")) for item in inputs]
    missing = sorted(set(specs) - set(given))
    unknown = sorted(set(given) - set(specs))
    if missing or unknown or len(given) != len(set(given)):
        raise InputError(
            f"the request's inputs are {given}; model '{manifest.name}' takes {sorted(specs)}.",
            "Send each model input exactly once (GET /v2/models/NAME lists them).",
        )
    return {str(item["name"]): _decode(specs[str(item["name"])], item) for item in inputs}


def _decode(spec: TensorSpec, item: Mapping[str, Any]) -> Array:
    name, want = spec.name, v2_type(spec)
    if item.get("datatype") != want:
        raise InputError(
            f"input '{name}' has datatype {item.get('datatype')!r}; the model takes {want}.",
            f"Send it as {want}.",
        )
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InputError(f"input '{name}' has no valid shape ({shape!r}).", "Give a list of sizes.")
    _check_shape(name, shape, list(spec.shape))
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise InputError(f"input '{name}' has {count} elements; at most {MAX_ELEMENTS}.")
    try:
        array = np.asarray(item.get("data"), dtype=V2_TO_NUMPY[want])
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(
            f"input '{name}' data is not a list of {want} values ({exc}).",
            "Send numbers, flat in row-major order or nested to the shape.",
        ) from exc
    if array.size != count:
        raise InputError(
            f"input '{name}' has {array.size} values; shape {shape} needs {count}.",
            "Make the data match the shape.",
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError(f"input '{name}' holds NaN or infinite values.", "Send finite numbers.")
    return array.reshape(shape)


def _check_shape(name: str, shape: list[int], model: list[int]) -> None:
    fits = len(shape) == len(model) and all(m in (-1, s) for s, m in zip(shape, model, strict=True))
    if not fits:
        raise InputError(
            f"input '{name}' has shape {shape}; the model takes {model} (-1: any size).",
            "Reshape the input to the model's shape.",
        )


def encode_outputs(
    outputs: Mapping[str, Array], wanted: Sequence[str] | None
) -> list[dict[str, Any]]:
    """The response's ``outputs``: flat row-major data with shape and datatype."""
    names = list(wanted) if wanted else sorted(outputs)
    unknown = sorted(set(names) - set(outputs))
    if unknown:
        raise InputError(
            f"output {unknown[0]!r} was asked for; the model gives {sorted(outputs)}.",
            "Ask for the model's outputs (GET /v2/models/NAME lists them).",
        )
    return [
        {
            "name": name,
            "shape": list(outputs[name].shape),
            "datatype": NUMPY_TO_V2.get(outputs[name].dtype.str, "FP32"),
            "data": outputs[name].reshape(-1).tolist(),
        }
        for name in names
    ]
