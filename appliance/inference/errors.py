"""Errors of the inference engine.

OpenVINO raises bare ``RuntimeError``s whose text starts with C++ source locations; the engine
wraps them once, where they enter (``engine.py``), into an :class:`InferenceError` whose message
keeps only OpenVINO's own reason and whose hint says what to do.
"""

from __future__ import annotations

from appliance.errors import ApplianceError


class InferenceError(ApplianceError):
    """A model could not be read, compiled for a device, or run."""
