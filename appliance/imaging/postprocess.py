"""The imaging anomaly model's outputs into a per-slice finding: a score and a heat map.

The model (``models/imaging-anomaly``) has two outputs for a batch of one slice:

* ``score`` ``[1, 1]``: the probability that the slice holds a lesion, the pooled heat map
  (maximum of the 3x3-smoothed lesion logits) through a sigmoid;
* ``heatmap`` ``[1, 1, 128, 128]``: the per-pixel lesion probability on the input's grid (computed
  at half resolution, each value repeated 2 x 2).

The validation gate measures ``score`` (the first output); this module hands both on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from appliance.imaging.errors import ModelOutputError

SCORE, HEATMAP = "score", "heatmap"
_HINT = (
    "The model served for imaging is not the imaging anomaly model or is damaged; install the "
    "vendor's imaging-anomaly bundle again."
)


@dataclass(frozen=True)
class SliceFinding:
    """One slice's result: ``score`` in [0, 1] and ``heatmap`` (float32, 2-D, values in [0, 1])."""

    score: float
    heatmap: npt.NDArray[np.float32]


def summarise(outputs: Mapping[str, Any]) -> SliceFinding:
    """The finding of a batch-1 inference whose outputs are keyed by name (``score``, ``heatmap``).

    Raises ModelOutputError when an output is missing, has another shape, or is not finite and
    within [0, 1] (a sigmoid's range).
    """
    for name in (SCORE, HEATMAP):
        if name not in outputs:
            held = ", ".join(sorted(outputs)) or "none"
            raise ModelOutputError(f"the model gave no '{name}' output (it gave {held}).", _HINT)
    score = np.asarray(outputs[SCORE], dtype=np.float32)
    heatmap = np.asarray(outputs[HEATMAP], dtype=np.float32)
    if score.size != 1 or heatmap.ndim != 4 or heatmap.shape[:2] != (1, 1):  # noqa: PLR2004
        raise ModelOutputError(
            f"the outputs have shapes score {score.shape} and heatmap {heatmap.shape}; one slice "
            "needs [1, 1] and [1, 1, H, W].",
            _HINT,
        )
    for name, values in ((SCORE, score), (HEATMAP, heatmap)):
        if not (np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0):
            raise ModelOutputError(
                f"the '{name}' output holds values outside [0, 1] or NaN.", _HINT
            )
    return SliceFinding(float(score.reshape(())), heatmap[0, 0].copy())


def peak(heatmap: npt.NDArray[np.float32], rows: int, columns: int) -> tuple[int, int]:
    """Where the heat map is hottest, as (row, column) on the source slice of ``rows`` x
    ``columns`` pixels (preprocess centred the slice in a square, then resampled it to the map's
    grid; this undoes both)."""
    grid_rows, grid_columns = heatmap.shape
    i, j = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    side = max(rows, columns)
    top, left = (side - rows) // 2, (side - columns) // 2
    row = int((int(i) + 0.5) * side / grid_rows) - top
    column = int((int(j) + 0.5) * side / grid_columns) - left
    return min(max(row, 0), rows - 1), min(max(column, 0), columns - 1)
