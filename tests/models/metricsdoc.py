"""The leaves of a metrics.json document, to compare a rebuilt one with the committed one."""

from __future__ import annotations

from typing import Any


def flat(doc: Any, prefix: str = "") -> dict[str, Any]:
    """Each leaf of ``doc`` by its dotted path (``held_out.openvino_f32.auc_goal``)."""
    if not isinstance(doc, dict):
        return {prefix: doc}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        out |= flat(value, f"{prefix}.{key}" if prefix else str(key))
    return out
