"""The torch module of the imaging anomaly model (kept so torch can run the trained weights).

A small fully convolutional net: two stride-2 stages, two dilated context layers (a receptive
field of about 60 input pixels, enough to tell a blob from the anatomy around it), one skip
connection, a lesion-logit map at half resolution. Outputs, as exported:

* ``score`` [N, 1]: sigmoid of the maximum of the 3x3-averaged logit map (the pooled map);
* ``heatmap`` [N, 1, 128, 128]: sigmoid of the logit map, each value repeated 2 x 2 (nearest).

Batch norm folds into the convolutions at export, so the graph is convolutions, ReLU and pooling:
all of it runs in int8 after quantisation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional


def _block(cin: int, cout: int, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class AnomalyNet(nn.Module):
    """image [N, 1, H, W] (H, W multiples of 4) -> (score [N, 1], heatmap [N, 1, H, W])."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w1, w2, w3 = width, 2 * width, 2 * width
        self.stem = _block(1, w1)
        self.down1 = _block(w1, w2, stride=2)
        self.mid1 = _block(w2, w2)
        self.down2 = _block(w2, w3, stride=2)
        self.ctx1 = _block(w3, w3, dilation=2)
        self.ctx2 = _block(w3, w3, dilation=4)
        self.fuse = _block(w3 + w2, w2)
        self.head = nn.Conv2d(w2, 1, 1)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """The lesion-logit map at half the input's resolution."""
        half = self.mid1(self.down1(self.stem(image)))
        quarter = self.ctx2(self.ctx1(self.down2(half)))
        up = functional.interpolate(quarter, scale_factor=2.0, mode="nearest")
        return self.head(self.fuse(torch.cat([up, half], dim=1)))  # type: ignore[no-any-return]

    @staticmethod
    def pool(logits: torch.Tensor) -> torch.Tensor:
        """The slice logit: the maximum of the 3x3-averaged map, [N, 1]."""
        smooth = functional.avg_pool2d(logits, 3, stride=1, padding=1, count_include_pad=False)
        return torch.amax(smooth, dim=(2, 3))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(image)
        score = torch.sigmoid(self.pool(logits))
        heat = functional.interpolate(
            logits, scale_factor=2.0, mode="bilinear", align_corners=False
        )
        return score, torch.sigmoid(heat)


def load(path: Path) -> AnomalyNet:
    """The net with the weights of ``path`` (the recipe's ``torch/state_dict.npz``), in eval mode.

    The state dict is stored as plain arrays (no pickle), so loading it runs no code.
    """
    net = AnomalyNet()
    with np.load(path, allow_pickle=False) as arrays:
        state = {name: torch.from_numpy(arrays[name].copy()) for name in arrays.files}
    net.load_state_dict(state)
    return net.eval()
