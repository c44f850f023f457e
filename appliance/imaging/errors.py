"""Errors of the imaging helpers: a slice the model cannot read, or outputs it did not make."""

from __future__ import annotations

from appliance.errors import ApplianceError


class ImagingError(ApplianceError):
    """Base of the imaging helpers' errors."""


class UnusableSliceError(ImagingError):
    """A DICOM object that is not a single greyscale slice with readable pixel data."""


class ModelOutputError(ImagingError):
    """The model's outputs do not have the names or shapes of the imaging reference model."""
