"""The evaluation sets of the imaging recipe and the metrics its card reports.

Both are functions of fixed seeds and package data only, so ``tests/models`` rebuilds the very
same cases and re-measures every number of the card on the committed IR.

* held-out set: for every held-out scanner, 240 cases (120 without a lesion, 30 lesions in each
  contrast band); no slice of these scanners is ever trained on;
* seen set: for every training scanner, 80 cases (10 lesions per band) on new crops and lesions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import imaging_data as data
import numpy as np
import numpy.typing as npt

from appliance.updates.validate import auc

SEED = 20261127
HELD_OUT_PER_BAND, SEEN_PER_BAND = 30, 10
Scores = Callable[
    [npt.NDArray[np.float32]], tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]
]


def evaluation_set(held_out: bool) -> data.CaseSet:
    """The held-out (or seen) set: per source, negatives and banded positives, interleaved."""
    pool = data.backgrounds(held_out)
    per_band = HELD_OUT_PER_BAND if held_out else SEEN_PER_BAND
    sets = []
    for index, name in enumerate(sorted({b.source for b in pool})):
        mine = tuple(b for b in pool if b.source == name)
        contrasts = data.banded_contrasts(per_band)
        rng = np.random.default_rng((SEED, 2 if held_out else 3, index))
        sets.append(
            data.make_cases(mine, 2 * len(contrasts), rng, augment=False, contrasts=contrasts)
        )
    return data.CaseSet(
        np.concatenate([s.images for s in sets]),
        np.concatenate([s.masks for s in sets]),
        np.concatenate([s.labels for s in sets]),
        np.concatenate([s.contrast for s in sets]),
        np.concatenate([s.source for s in sets]),
    )


def auc_where(scores: npt.NDArray[Any], cases: data.CaseSet, keep: npt.NDArray[np.bool_]) -> float:
    """AUC of the positives in ``keep`` against the negatives in ``keep``."""
    chosen = keep & ((cases.labels == 0) | (cases.contrast > 0))
    return round(auc(scores[chosen], cases.labels[chosen]), 4)


def metrics(
    scores: npt.NDArray[Any], heat: npt.NDArray[Any] | None, cases: data.CaseSet
) -> dict[str, Any]:
    """Every metric of one runtime on one set: AUC by band, at the goal, by source; Dice; rates."""
    negative = cases.labels == 0
    goal = negative | (cases.contrast >= data.GOAL_CONTRAST)
    out: dict[str, Any] = {
        "auc_goal": auc_where(scores, cases, goal),
        "auc_all": auc_where(scores, cases, np.ones_like(goal)),
        "auc_by_band": {
            f"{lo:.2f}-{hi:.2f}": auc_where(
                scores, cases, negative | ((cases.contrast >= lo) & (cases.contrast < hi))
            )
            for lo, hi in data.BANDS
        },
        "auc_goal_by_source": {
            str(name): auc_where(scores, cases, goal & (cases.source == name))
            for name in sorted(set(cases.source.tolist()))
        },
    }
    flagged = scores >= 0.5  # noqa: PLR2004
    positive_goal = ~negative & goal
    out["sensitivity_goal_at_0.5"] = round(float(flagged[positive_goal].mean()), 4)
    out["specificity_at_0.5"] = round(float(1 - flagged[negative].mean()), 4)
    if heat is not None:
        out["dice_goal_positives"] = round(dice(heat, cases.masks, positive_goal), 4)
    return out


def dice(heat: npt.NDArray[Any], masks: npt.NDArray[Any], keep: npt.NDArray[np.bool_]) -> float:
    """Mean Dice of ``heat >= 0.5`` against the lesion masks over the cases in ``keep``."""
    predicted = heat[keep].reshape(int(keep.sum()), -1) >= 0.5  # noqa: PLR2004
    truth = masks[keep].reshape(int(keep.sum()), -1).astype(bool)
    overlap = (predicted & truth).sum(axis=1)
    sizes = predicted.sum(axis=1) + truth.sum(axis=1)
    return float(np.mean(np.where(sizes == 0, 1.0, 2.0 * overlap / np.maximum(sizes, 1))))


def run_batched(
    scores: Scores, images: npt.NDArray[np.float32], batch: int = 32
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """``scores`` applied batch by batch: (score per case, heat map per case)."""
    parts = [scores(images[i : i + batch]) for i in range(0, len(images), batch)]
    return (
        np.concatenate([p[0] for p in parts]).reshape(len(images)),
        np.concatenate([p[1] for p in parts]),
    )
