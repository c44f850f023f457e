"""Whether this CPU is of the class the committed models were built and measured on.

Training and measuring run float arithmetic whose last bits depend on the CPU's instruction set
(torch's and OpenBLAS's kernels, OpenVINO's int8 and default-precision kernels): on another
class of CPU the recipes build models as good but not the same bytes, and the INT8 figures move
in the third decimal. The committed files were built on a CPU whose OpenVINO default inference
precision is bfloat16 (recorded in the imaging model's metrics.json); that precision stands for
the class here. A test that compares bytes does so on such a CPU, and says why it does not
elsewhere.
"""

from __future__ import annotations

import functools
import json

import openvino as ov

from .imaging import FOLDER


@functools.cache
def recorded() -> str:
    """The default precision of the CPU the committed models were measured on."""
    metrics = json.loads((FOLDER / "metrics.json").read_text())
    return str(metrics["precision"]["openvino_default_precision"])


@functools.cache
def here() -> str:
    return str(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))


def same_class() -> bool:
    return here() == recorded()


def why_not() -> str:
    return (
        f"this CPU's default inference precision is {_name(here())}, the committed models' build "
        f"machine's {_name(recorded())}: another class of CPU, whose float kernels give other "
        "last bits"
    )


def _name(precision: str) -> str:
    """``<Type: 'bfloat16'>`` (how OpenVINO prints an element type) as ``bfloat16``."""
    return precision.split("'")[1] if precision.count("'") == 2 else precision
