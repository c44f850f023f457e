"""Imaging helpers: a DICOM slice into the anomaly model's input, its outputs into a finding.

The same code prepares the training slices of ``models/imaging-anomaly/build.py`` and the slices
the box receives, so the model sees on the box what it saw when it was trained.
"""

from __future__ import annotations

from appliance.imaging.errors import ImagingError, ModelOutputError, UnusableSliceError
from appliance.imaging.postprocess import SliceFinding, summarise
from appliance.imaging.preprocess import INPUT_SIZE, pixels_to_input, slice_to_input

__all__ = [
    "INPUT_SIZE",
    "ImagingError",
    "ModelOutputError",
    "SliceFinding",
    "UnusableSliceError",
    "pixels_to_input",
    "slice_to_input",
    "summarise",
]
