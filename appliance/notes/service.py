"""The notes task on a served model: the check that the model fits, and the pipeline around it."""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from appliance.inference.registry import ServedModel
from appliance.notes.context import ConText
from appliance.notes.pipeline import NotesPipeline
from appliance.notes.tokens import FEATURES
from appliance.notes.types import CLASSES
from appliance.updates.manifest import DType, Manifest


@functools.cache
def default_context() -> ConText:
    """The ConText rules, compiled once per process (they are immutable)."""
    return ConText()


def misfit(manifest: Manifest) -> str | None:
    """Why the model cannot serve this box's note pipeline, or None when it can."""
    first_in, first_out = manifest.inputs[0], manifest.outputs[0]
    if first_in.dtype is not DType.I64 or first_in.shape[-1:] != (FEATURES,):
        return (
            f"the notes model {manifest.name} {manifest.version} takes {first_in.shape} "
            f"{first_in.dtype.value}; this box's tokenizer makes ({FEATURES},) i64 per token."
        )
    if first_out.shape[-1:] != (len(CLASSES),):
        return (
            f"the notes model {manifest.name} {manifest.version} answers {first_out.shape}; "
            f"this box's pipeline reads {len(CLASSES)} class probabilities per token."
        )
    return None


def pipeline_for(model: ServedModel) -> NotesPipeline:
    """A pipeline whose tagger runs on ``model`` (check :func:`misfit` first)."""
    name_in, name_out = model.manifest.inputs[0].name, model.manifest.outputs[0].name

    def infer(ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        out: npt.NDArray[np.float32] = model.infer({name_in: ids})[name_out]
        return out

    return NotesPipeline(infer, default_context())
