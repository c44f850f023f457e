"""The torch module of the imaging anomaly model (kept so torch can run the trained weights).

A fixed local-contrast front, then a small fully convolutional net that works at half and
quarter resolution only. The front (no weights) gives the net, beside the slice itself, the slice
in units of its own local contrast at two scales: ``(x - local mean) / local standard
deviation``, softly bounded to +-3 (``3 tanh(z / 3)``, so that int8 quantisation of the stem's
input keeps a fine step). A lesion of contrast 0.15 is faint on a noisy MR and plain on a flat
CT in slice units, but looks alike on both in local-contrast units: the front is what makes
scanners the net never saw look like the ones it did. The local mean and variance are smooth, so
they are averaged at half resolution (windows of 3 and 11 half-resolution pixels, about 6 and 22
input pixels; a row pass and a column pass) and repeated 2 x 2, as OpenVINO's pooling costs in
proportion to pixels times window. Even so, OpenVINO runs these one-channel maps slowly: the front
is about a third of the int8 model's time on the CPU (onnxruntime runs it in a quarter of that).
Then a 5 x 5 stride-2 stem (no full-resolution feature maps: a 1-channel convolution at 128 x 128
gains little from int8 and dominated the quantised model's latency), a half-resolution stage, a
quarter-resolution stage with two dilated context layers (a receptive field of about 70 input
pixels, enough to tell a blob from the anatomy around it), one skip connection, a lesion-logit map
at half resolution.
Wider channels at 1/2 and 1/4 give the int8 kernels (VNNI) enough work per pixel to pay off.
Outputs, as exported:

* ``score`` [N, 1]: sigmoid of the maximum of the 3x3-averaged logit map (the pooled map);
* ``heatmap`` [N, 1, H, W]: sigmoid of the logit map, each value repeated 2 x 2 (nearest): the
  sigmoid runs on the half-resolution map and the repeat is a copy.

Batch norm folds into the convolutions at export, so behind the front the graph is convolutions,
ReLU and pooling: all of it runs in int8 after quantisation; the front stays in float.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional

WIDTHS = (24, 32, 64)  # stem, half resolution, quarter resolution
CONTRAST_WINDOWS = (3, 11)  # local-contrast window sides, in half-resolution pixels
CONTRAST_BOUND = 3.0  # local contrast is squashed to +-this
VARIANCE_FLOOR = 1e-3  # keeps flat areas (air, padding) at 0 instead of dividing by ~0


def _block(
    cin: int, cout: int, *, kernel: int = 3, stride: int = 1, dilation: int = 1
) -> nn.Sequential:
    padding = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _window_mean(x: torch.Tensor, side: int) -> torch.Tensor:
    """Mean over the ``side`` x ``side`` window around each pixel (only the pixels inside the
    image count), as a row pass and a column pass (the same numbers as the square window)."""
    rows = functional.avg_pool2d(x, (side, 1), 1, (side // 2, 0), count_include_pad=False)
    return functional.avg_pool2d(rows, (1, side), 1, (0, side // 2), count_include_pad=False)


def _coarse_mean(x: torch.Tensor, side: int) -> torch.Tensor:
    """The local mean of full-resolution ``x`` over ``side`` half-resolution pixels, computed at
    half resolution and repeated 2 x 2."""
    half = _window_mean(functional.avg_pool2d(x, 2), side)
    return functional.interpolate(half, scale_factor=2.0, mode="nearest")


class LocalContrast(nn.Module):
    """image [N, 1, H, W] -> [N, 1 + len(windows), H, W]: the image, then its bounded local
    contrast for each window side."""

    def __init__(self, windows: tuple[int, ...] = CONTRAST_WINDOWS) -> None:
        super().__init__()
        self.windows = windows

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        channels = [image]
        for side in self.windows:
            centred = image - _coarse_mean(image, side)
            spread = torch.sqrt(_coarse_mean(centred * centred, side) + VARIANCE_FLOOR)
            channels.append(CONTRAST_BOUND * torch.tanh(centred / spread / CONTRAST_BOUND))
        return torch.cat(channels, dim=1)


class AnomalyNet(nn.Module):
    """image [N, 1, H, W] (H, W multiples of 4) -> (score [N, 1], heatmap [N, 1, H, W])."""

    def __init__(self, widths: tuple[int, int, int] = WIDTHS) -> None:
        super().__init__()
        w0, w1, w2 = widths
        self.front = LocalContrast()
        self.stem = _block(1 + len(self.front.windows), w0, kernel=5, stride=2)
        self.widen = _block(w0, w1)
        self.mid = _block(w1, w1)
        self.down = _block(w1, w2, stride=2)
        self.ctx1 = _block(w2, w2, dilation=2)
        self.ctx2 = _block(w2, w2, dilation=4)
        self.fuse = _block(w2 + w1, w1)
        self.head = nn.Conv2d(w1, 1, 1)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """The lesion-logit map at half the input's resolution."""
        half = self.mid(self.widen(self.stem(self.front(image))))
        quarter = self.ctx2(self.ctx1(self.down(half)))
        up = functional.interpolate(quarter, scale_factor=2.0, mode="nearest")
        return self.head(self.fuse(torch.cat([up, half], dim=1)))  # type: ignore[no-any-return]

    @staticmethod
    def pool(logits: torch.Tensor) -> torch.Tensor:
        """The slice logit: the maximum of the 3x3-averaged map, [N, 1]."""
        return torch.amax(AnomalyNet.smooth(logits), dim=(2, 3))

    @staticmethod
    def smooth(logits: torch.Tensor) -> torch.Tensor:
        """The 3x3-averaged logit map the slice score is the maximum of."""
        return functional.avg_pool2d(logits, 3, stride=1, padding=1, count_include_pad=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(image)
        score = torch.sigmoid(self.pool(logits))
        heat = functional.interpolate(torch.sigmoid(logits), scale_factor=2.0, mode="nearest")
        return score, heat


def load(path: Path) -> AnomalyNet:
    """The net with the weights of ``path`` (the recipe's ``torch/state_dict.npz``), in eval mode.

    The state dict is stored as plain arrays (no pickle), so loading it runs no code.
    """
    net = AnomalyNet()
    with np.load(path, allow_pickle=False) as arrays:
        state = {name: torch.from_numpy(arrays[name].copy()) for name in arrays.files}
    net.load_state_dict(state)
    return net.eval()
