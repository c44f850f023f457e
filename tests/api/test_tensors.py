"""Tensor decoding on its own, for datatypes no served test model takes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from appliance.api.tensors import InputError, decode_inputs
from appliance.updates.manifest import Manifest, parse_manifest
from tests.updates.conftest import manifest_doc


def _mask_model() -> Manifest:
    doc = manifest_doc("masked", "1.0.0", inputs=[
        {"name": "mask", "shape": [-1, 4], "dtype": "boolean"},
    ])  # fmt: skip
    return parse_manifest(json.dumps(doc).encode())


def _binary(data: bytes) -> list[dict[str, object]]:
    size = {"binary_data_size": len(data)}
    return [{"name": "mask", "shape": [1, 4], "datatype": "BOOL", "parameters": size}]


def test_bool_binary_data_of_zeros_and_ones_is_read() -> None:
    data = bytes([0, 1, 1, 0])
    arrays = decode_inputs(_mask_model(), _binary(data), memoryview(data))
    assert arrays["mask"].tolist() == [[False, True, True, False]]


def test_bool_binary_data_with_another_byte_is_refused() -> None:
    """A byte of 2 became a numpy bool whose storage is 2, passed to the model as it is."""
    data = bytes([0, 1, 2, 0])
    with pytest.raises(InputError) as caught:
        decode_inputs(_mask_model(), _binary(data), memoryview(data))
    assert "input 'mask' is BOOL" in caught.value.message
    assert "0 for false, 1 for true" in (caught.value.hint or "")


def test_bool_json_data_is_read_and_numbers_refused() -> None:
    item = {"name": "mask", "shape": [1, 4], "datatype": "BOOL"}
    arrays = decode_inputs(_mask_model(), [{**item, "data": [True, False, False, True]}])
    assert arrays["mask"].dtype == np.bool_ and arrays["mask"].tolist() == [[1, 0, 0, 1]]
    with pytest.raises(InputError, match="not a list of BOOL values"):
        decode_inputs(_mask_model(), [{**item, "data": [1, 0, 0, 2]}])
