"""The result store's outputs text: what json.dumps would make, without scanning the base64."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from appliance.api.results import EncodedJson, _row, outputs_json

NAMES = st.text(min_size=1, max_size=12)  # quotes, backslashes, controls, non-ASCII
FLOATS = st.floats(allow_nan=False, allow_infinity=False, width=32)


@st.composite
def outputs(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Response entries as encode_outputs makes them, some binary, and the binary ones' bytes."""
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for _ in range(draw(st.integers(0, 4))):
        entry: dict[str, Any] = {"name": draw(NAMES), "shape": [draw(st.integers(1, 3))],
                                 "datatype": "FP32"}  # fmt: skip
        if draw(st.booleans()):
            blob = draw(st.binary(max_size=64))
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = draw(st.lists(FLOATS, max_size=3))
        entries.append(entry)
    return entries, blobs


@given(outputs())
def test_the_text_is_what_json_dumps_makes_of_the_outputs(drawn: Any) -> None:
    entries, blobs = drawn
    chunks = iter(blobs)
    stored = [
        {**entry, "data_base64": base64.b64encode(next(chunks)).decode()}
        if "parameters" in entry else entry
        for entry in entries
    ]  # fmt: skip
    text = outputs_json(entries, blobs)
    assert text == json.dumps(stored)
    assert json.loads(text) == stored


def test_a_row_keeps_encoded_outputs_as_they_are_and_encodes_others() -> None:
    encoded = outputs_json([{"name": "h", "parameters": {"binary_data_size": 2}}], [b"\x00\x01"])
    assert isinstance(encoded, EncodedJson)
    assert _row("r", 0.0, "a", "/x", {}, "0" * 64, encoded)[6] is encoded
    assert _row("r", 0.0, "a", "/x", {}, "0" * 64, [{"name": "s", "data": [1.0]}])[6] == (
        '[{"name": "s", "data": [1.0]}]'
    )
