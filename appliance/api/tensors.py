"""KServe v2 JSON tensors <-> numpy, checked against the model's manifest. Pure functions.

Every refusal is an :class:`InputError` whose message names the tensor and what is wrong with it,
so that a client sees "input 'features' has shape [2, 7]; the model takes [-1, 8]" and not a 500.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
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
# The numpy kinds of JSON data each tensor kind accepts, and what the others are in words.
_KINDS: Mapping[str, str] = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}
_JSON_KIND: Mapping[str, str] = {
    "b": "booleans", "f": "numbers with a fraction", "U": "strings", "O": "mixed values",
}  # fmt: skip
NUMPY_TO_V2: Mapping[str, str] = {np.dtype(t).str: n for n, t in V2_TO_NUMPY.items()}


class InputError(ApplianceError):
    """A request's tensors do not fit the model."""


def v2_type(spec: TensorSpec) -> str:
    return MANIFEST_TO_V2.get(str(spec.dtype), "BYTES")


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON header and the binary tensor data of a request body.

    KServe v2's binary tensor data extension (Triton's, which stock clients such as tritonclient
    use by default): the ``Inference-Header-Content-Length`` header gives the JSON part's length;
    the tensors' raw bytes follow it, in the order of the inputs that name a
    ``binary_data_size``. Without the header the whole body is JSON.
    """
    if header_length is None:
        return body, memoryview(b"")
    digits = header_length.strip()
    # ASCII digits only (str.isdigit passes "²", which int() refuses), and no longer than the
    # body's own length (int() refuses more than 4300 digits).
    if (
        not (digits.isascii() and digits.isdigit())
        or len(digits) > len(str(len(body)))
        or int(digits) > len(body)
    ):
        raise InputError(
            f"Inference-Header-Content-Length is {header_length[:40]!r}; the body has {len(body)} "
            "bytes.",
            "Give the length of the JSON header in bytes (binary tensor data extension).",
        )
    length = int(digits)
    return body[:length], memoryview(body)[length:]


def decode_inputs(
    manifest: Manifest, inputs: Sequence[Mapping[str, Any]], binary: memoryview | None = None
) -> dict[str, Array]:
    """Turn the request's ``inputs`` (JSON data, or ``binary`` slices) into arrays for the model,
    or raise InputError."""
    specs = {spec.name: spec for spec in manifest.inputs}
    given = [str(item.get("name")) for item in inputs]
    missing = sorted(set(specs) - set(given))
    unknown = sorted(set(given) - set(specs))
    if missing or unknown or len(given) != len(set(given)):
        raise InputError(
            f"the request's inputs are {given}; model '{manifest.name}' takes {sorted(specs)}.",
            "Send each model input exactly once (GET /v2/models/NAME lists them).",
        )
    raw = binary if binary is not None else memoryview(b"")
    arrays: dict[str, Array] = {}
    offset = 0
    for item in inputs:
        spec = specs[str(item["name"])]
        size = _binary_size(spec.name, item)
        if size is None:
            arrays[spec.name] = _decode(spec, item)
        else:
            if offset + size > len(raw):
                raise InputError(
                    f"input '{spec.name}' claims {size} bytes of binary data; only "
                    f"{len(raw) - offset} are left in the body.",
                    "Append each binary input's bytes after the JSON header, in input order.",
                )
            arrays[spec.name] = _decode_binary(spec, item, raw[offset : offset + size])
            offset += size
    if offset != len(raw):
        raise InputError(
            f"the body holds {len(raw) - offset} bytes of binary data that no input claims.",
            "Give each binary input its 'binary_data_size' parameter.",
        )
    return arrays


def _binary_size(name: str, item: Mapping[str, Any]) -> int | None:
    params = item.get("parameters")
    size = params.get("binary_data_size") if isinstance(params, Mapping) else None
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InputError(f"input '{name}' has binary_data_size {size!r}.", "Give a byte count.")
    if "data" in item:
        raise InputError(
            f"input '{name}' has both 'data' and binary_data_size.", "Send one or the other."
        )
    return size


def _checked(spec: TensorSpec, item: Mapping[str, Any]) -> tuple[str, list[int], int]:
    """The input's datatype, shape and element count, checked against ``spec``."""
    name, want = spec.name, v2_type(spec)
    if item.get("datatype") != want:
        raise InputError(
            f"input '{name}' has datatype {item.get('datatype')!r}; the model takes {want}.",
            f"Send it as {want}.",
        )
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InputError(f"input '{name}' has no valid shape ({shape!r}).", "Give a list of sizes.")
    _check_shape(name, shape, list(spec.shape))
    count = math.prod(shape)
    if count == 0:  # the model would run on nothing and answer empty outputs
        what = "no cases" if shape[0] == 0 else "no values"
        raise InputError(
            f"input '{name}' has shape {shape}: it has {what}.",
            "Send at least one case, with a value for every element of the model's shape.",
        )
    if count > MAX_ELEMENTS:
        raise InputError(
            f"input '{name}' has {count} elements; at most {MAX_ELEMENTS}.",
            "Split the batch into smaller requests; send whole studies to /v1/tasks/studies.",
        )
    return want, shape, count


def _decode(spec: TensorSpec, item: Mapping[str, Any]) -> Array:
    want, shape, count = _checked(spec, item)
    name = spec.name
    try:
        array = _from_json(item.get("data"), np.dtype(V2_TO_NUMPY[want]))
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(
            f"input '{name}' data is not a list of {want} values ({exc}).",
            "Send JSON numbers (not strings; booleans only for BOOL), flat in row-major order "
            "or nested to the shape.",
        ) from exc
    if array.size != count:
        raise InputError(
            f"input '{name}' has {array.size} values; shape {shape} needs {count}.",
            "Make the data match the shape.",
        )
    return _finite(name, array).reshape(shape)


def _from_json(data: Any, target: np.dtype[Any]) -> Array:
    """JSON tensor data as ``target``; raises TypeError, ValueError or OverflowError, saying why.

    JSON's own kinds must fit: numpy would read "1.5" and true as numbers, and 1.5 as 1."""
    given = np.asarray(data)
    if given.size and given.dtype.kind not in _KINDS[target.kind]:
        raise TypeError(f"it holds {_JSON_KIND.get(given.dtype.kind, 'other values')}")
    if target.kind != "b" and given.size and _holds_booleans(data, given.ndim):
        raise TypeError("it holds booleans among its numbers")
    if target.kind in "iu" and given.size and given.dtype != target:
        info = np.iinfo(target)
        if given.min() < info.min or given.max() > info.max:
            raise OverflowError(f"a value is outside {info.min}..{info.max}")
    return given.astype(target)


def _holds_booleans(data: Any, depth: int) -> bool:
    """Whether JSON ``data``, lists nested ``depth`` deep (as numpy read it), holds true or false.

    Among numbers numpy reads them as 1 and 0 (Python's bool is an int), so only their type
    tells them apart."""
    values: Iterable[Any] = data if depth else [data]
    for _ in range(depth - 1):
        values = itertools.chain.from_iterable(values)
    return bool in set(map(type, values))


def _decode_binary(spec: TensorSpec, item: Mapping[str, Any], raw: memoryview) -> Array:
    want, shape, count = _checked(spec, item)
    dtype = np.dtype(V2_TO_NUMPY[want]).newbyteorder("<")  # the extension is little-endian
    if len(raw) != count * dtype.itemsize:
        raise InputError(
            f"input '{spec.name}' has {len(raw)} bytes of binary data; shape {shape} of {want} "
            f"needs {count * dtype.itemsize}.",
            "Send the tensor's raw little-endian bytes in row-major order.",
        )
    if want == "BOOL" and count and np.frombuffer(raw, np.uint8).max() > 1:
        # numpy and OpenVINO would keep the byte as it is: a "true" that is not 1.
        raise InputError(
            f"input '{spec.name}' is BOOL but its binary data holds a byte other than 0 and 1.",
            "Send each BOOL element as one byte: 0 for false, 1 for true.",
        )
    array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=False)
    return _finite(spec.name, array).reshape(shape)


def _finite(name: str, array: Array) -> Array:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InputError(f"input '{name}' holds NaN or infinite values.", "Send finite numbers.")
    return array


def _check_shape(name: str, shape: list[int], model: list[int]) -> None:
    fits = len(shape) == len(model) and all(m in (-1, s) for s, m in zip(shape, model, strict=True))
    if not fits:
        raise InputError(
            f"input '{name}' has shape {shape}; the model takes {model} (-1: any size).",
            "Reshape the input to the model's shape.",
        )


def requested_outputs(payload: Mapping[str, Any]) -> tuple[list[str], set[str], bool]:
    """(names asked for, those asked for as binary, whether unnamed outputs are binary).

    ``outputs: [{"name", "parameters": {"binary_data": true}}]`` asks for outputs by name;
    ``parameters.binary_data_output`` makes binary the default (tritonclient sends it when it
    asks for every output)."""
    params = payload.get("parameters")
    default = bool(isinstance(params, Mapping) and params.get("binary_data_output") is True)
    names: list[str] = []
    binary: set[str] = set()
    for entry in payload.get("outputs") or []:
        name = str(entry.get("name"))
        names.append(name)
        options = entry.get("parameters")
        flag = options.get("binary_data") if isinstance(options, Mapping) else None
        if flag is True or (flag is None and default):
            binary.add(name)
    return names, binary, default


def check_outputs(wanted: Sequence[str], available: Iterable[str]) -> None:
    """Raise InputError when an output asked for is not one the model gives."""
    given = sorted(available)
    unknown = sorted(set(wanted) - set(given))
    if unknown:
        raise InputError(
            f"output {unknown[0]!r} was asked for; the model gives {given}.",
            "Ask for the model's outputs (GET /v2/models/NAME lists them).",
        )


def encode_outputs(
    outputs: Mapping[str, Array], wanted: Sequence[str] | None, binary: set[str] | None = None,
    *, all_binary: bool = False,
) -> tuple[list[dict[str, Any]], list[bytes]]:  # fmt: skip
    """The response's ``outputs`` (flat row-major data, or ``binary_data_size`` for the outputs
    sent as binary) and the binary outputs' bytes, in order."""
    names = list(wanted) if wanted else sorted(outputs)
    check_outputs(names, outputs)
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in names:
        array = outputs[name]
        entry: dict[str, Any] = {
            "name": name,
            "shape": list(array.shape),
            "datatype": NUMPY_TO_V2.get(array.dtype.str, "FP32"),
        }
        if name in (binary or set()) or (all_binary and not wanted):
            blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.reshape(-1).tolist()
        entries.append(entry)
    return entries, blobs
