"""Where the reference models live, and a helper to read a model folder for the gate."""

from __future__ import annotations

from pathlib import Path

from appliance.updates.manifest import Manifest, parse_manifest
from appliance.updates.validate import CASES_FILE

MODELS = Path(__file__).resolve().parents[2] / "models"


def read_folder(folder: Path) -> tuple[Manifest, bytes, bytearray, dict[str, bytes]]:
    """What the validation gate gets from a bundle: manifest, IR, weights, reference files."""
    return (
        parse_manifest((folder / "manifest.json").read_bytes()),
        (folder / "model.xml").read_bytes(),
        bytearray((folder / "model.bin").read_bytes()),
        {CASES_FILE: (folder / CASES_FILE).read_bytes()},
    )
