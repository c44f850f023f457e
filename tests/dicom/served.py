"""A tiny conv model on real OpenVINO, and the registry's served model as ModelAnalyser sees it:
for tests (and the worker processes they kill) that need no TPM or encrypted model store."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from appliance.inference.engine import compile, infer, load_model

MODEL = "heat-demo"


def conv_model_files() -> dict[str, bytes]:
    """A 3x3 averaging convolution and a sigmoid: image [1,1,H,W] -> heatmap [1,1,H,W]."""
    image = ops.parameter([1, 1, -1, -1], np.float32, name="image")
    kernel = ops.constant(np.full((1, 1, 3, 3), 1 / 9, np.float32))
    conv = ops.convolution(image, kernel, [1, 1], [1, 1], [1, 1], [1, 1])
    heat = ops.sigmoid(conv)
    heat.output(0).get_tensor().set_names({"heatmap"})
    model = ov.Model([heat], [image], MODEL)
    manifest = {
        "manifest_version": 1, "name": MODEL, "version": "0.1.0", "task": "imaging-anomaly",
        "inputs": [{"name": "image", "shape": [1, 1, -1, -1], "dtype": "f32"}],
        "outputs": [{"name": "heatmap", "shape": [1, 1, -1, -1], "dtype": "f32"}],
        "compatibility": {"min_openvino": "2024.0", "devices": ["CPU"]},
        "reference": {"files": ["reference/cases.npz"], "metric": "auc", "expected": 0.5,
                      "tolerance": 0.1},
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)
        return {
            "model.xml": (folder / "model.xml").read_bytes(),
            "model.bin": (folder / "model.bin").read_bytes(),
            "manifest.json": json.dumps(manifest).encode(),
            "reference/cases.npz": b"not used here",
        }


@dataclass
class Provenance:
    values: dict[str, str] = field(default_factory=lambda: {"model_name": MODEL})

    def as_dict(self) -> dict[str, str]:
        return dict(self.values)


@dataclass
class Served:
    """The conv model compiled for the CPU, as the registry's ServedModel offers it."""

    compiled: Any
    provenance: Provenance = field(default_factory=Provenance)

    def infer(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return infer(self.compiled, inputs)


@dataclass
class Source:
    """The registry as ModelAnalyser asks it: every name is the one served model."""

    served: Served

    def get(self, name: str, version: str | None = None) -> Served:
        return self.served


def serve_conv_model() -> Source:
    files = conv_model_files()
    core = ov.Core()
    return Source(Served(compile(load_model(files["model.xml"], files["model.bin"], core=core),
                                 core=core)))  # fmt: skip
