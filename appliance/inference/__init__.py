"""Local inference on OpenVINO: models read from memory, compiled for the box's devices.

Today this is the minimal engine the update agent's validation gate uses; the inference service
grows from it.
"""

from __future__ import annotations

from appliance.inference.engine import (
    available_devices,
    compile,
    load_model,
    openvino_version,
    run_cases,
)
from appliance.inference.errors import InferenceError

__all__ = [
    "InferenceError",
    "available_devices",
    "compile",
    "load_model",
    "openvino_version",
    "run_cases",
]
