"""Shared access to the committed imaging model folder and its recipe's evaluation code."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

FOLDER = Path(__file__).resolve().parents[2] / "models" / "imaging-anomaly"


def recipe_module(name: str) -> ModuleType:
    """A module of the recipe folder (imaging_eval, imaging_data...), imported from there."""
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    return __import__(name)
