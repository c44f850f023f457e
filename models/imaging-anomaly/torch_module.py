"""The torch side of this model for bench/models.py: ``load()`` gives the trained module.

Convention (models/README.md): a model folder trained in torch has ``torch_module.py`` whose
``load()`` returns the eval-mode ``torch.nn.Module`` with the committed weights, taking the same
inputs (by position, in the manifest's order) as the IR.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from imaging_net import AnomalyNet  # noqa: E402
from imaging_net import load as _load  # noqa: E402


def load() -> AnomalyNet:
    """The imaging anomaly net with ``torch/state_dict.npz``, in eval mode."""
    return _load(HERE / "torch" / "state_dict.npz")
