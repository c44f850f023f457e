"""The torch module of the imaging anomaly model (kept so torch can run the trained weights).

A fixed local-contrast front, then a small fully convolutional net that works at half and
quarter resolution only. The front (no weights) gives the net, beside the slice itself, the slice
in units of its own local contrast at two scales: ``(x - local mean) / local standard
deviation``, softly bounded to +-3 (``3 tanh(z / 3)``, so that int8 quantisation of the stem's
input keeps a fine step). A lesion of contrast 0.15 is faint on a noisy MR and plain on a flat
CT in slice units, but looks alike on both in local-contrast units: the front is what makes
scanners the net never saw look like the ones it did. The local mean and variance are smooth, so
they are averaged at half resolution (windows of 3 and 11 half-resolution pixels, about 6 and 22
input pixels) and repeated 2 x 2.
Training computes the means by pooling (any crop size). The exported graph (``fix_size``)
computes the same numbers as matrix products, ``A @ x @ A.T`` with one constant matrix per window
that averages 2 x 2 and then over the window, and repeats pixels by depth-to-space. OpenVINO runs
pooling, interpolation and element-wise ops on one-channel maps slowly (about 60 us each at
128 x 128 on this CPU: the pooled front was 0.6 ms of the int8 model's 1.8 ms); in this form the
front takes about 0.15 ms. The score's 3 x 3 average is a matrix product in the same way.
Then a 5 x 5 stride-2 stem (no full-resolution feature maps: a 1-channel convolution at 128 x 128
gains little from int8 and dominated the quantised model's latency), a half-resolution stage, a
quarter-resolution stage with two dilated context layers (a receptive field of about 70 input
pixels, enough to tell a blob from the anatomy around it), one skip connection, a lesion-logit map
at half resolution.
Wide channels at 1/2 and 1/4 (48 and 96) give the int8 kernels (VNNI) enough work per pixel to
pay off: the box serves the int8 model, and at 32 and 64 channels the fixed cost of the graph's
other ops held it to about 2.7 times onnxruntime's fp32 speed, against about 3.4 now.
Outputs, as exported:

* ``score`` [N, 1]: sigmoid of the maximum of the 3x3-averaged logit map (the pooled map);
* ``heatmap`` [N, 1, H, W]: sigmoid of the logit map, each value repeated 2 x 2 (nearest).

Batch norm folds into the convolutions at export, so behind the front the graph is convolutions,
ReLU and pooling: all of it runs in int8 after quantisation; the front and the read-out stay in
float.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional

WIDTHS = (24, 48, 96)  # stem, half resolution, quarter resolution
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


def window_matrix(size: int, side: int) -> np.ndarray:
    """``M`` [size, size] with ``M @ v`` the mean of ``v`` over the ``side`` entries around each
    entry (only those inside count), as ``_window_mean`` takes it along one axis."""
    matrix = np.zeros((size, size))
    for row in range(size):
        low, high = max(0, row - side // 2), min(size, row + side // 2 + 1)
        matrix[row, low:high] = 1.0 / (high - low)
    return matrix


def half_mean_matrix(size: int, side: int) -> np.ndarray:
    """``A`` [size/2, size] with ``A @ x @ A.T`` = ``_window_mean(avg_pool2d(x, 2), side)`` for a
    size x size ``x``: average pairs, then over the window."""
    pairs = np.repeat(np.eye(size // 2), 2, axis=1) / 2.0
    return window_matrix(size // 2, side) @ pairs


def repeat2(x: torch.Tensor) -> torch.Tensor:
    """``x`` [N, C, h, w] with each value repeated 2 x 2 (nearest upsampling, [N, C, 2h, 2w]), as
    four copies and a depth-to-space."""
    n, c, h, w = x.shape
    copies = x.unsqueeze(2).expand(n, c, 4, h, w).reshape(n, 4 * c, h, w)
    return functional.pixel_shuffle(copies, 2)


class LocalContrast(nn.Module):
    """image [N, 1, H, W] -> [N, 1 + len(windows), H, W]: the image, then its bounded local
    contrast for each window side."""

    half_means: torch.Tensor | None

    def __init__(self, windows: tuple[int, ...] = CONTRAST_WINDOWS) -> None:
        super().__init__()
        self.windows = windows
        self.register_buffer("half_means", None, persistent=False)

    def fix_size(self, size: int) -> None:
        """Compute the means as matrix products for size x size inputs (the export form)."""
        matrices = np.stack([half_mean_matrix(size, side) for side in self.windows])
        self.half_means = torch.from_numpy(matrices).float()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        centred = image - self._mean(image)
        spread = torch.sqrt(self._mean(centred * centred) + VARIANCE_FLOOR)
        contrast = CONTRAST_BOUND * torch.tanh(centred / spread / CONTRAST_BOUND)
        return torch.cat([image, contrast], dim=1)

    def _mean(self, x: torch.Tensor) -> torch.Tensor:
        """[N, len(windows), H, W]: channel i of ``x`` (or its one channel) averaged over window
        i."""
        if self.half_means is not None:
            return repeat2(self.half_means @ x @ self.half_means.transpose(1, 2))
        x = x.expand(-1, len(self.windows), -1, -1) if x.shape[1] == 1 else x
        means = [_coarse_mean(x[:, i : i + 1], side) for i, side in enumerate(self.windows)]
        return torch.cat(means, dim=1)


class Readout(nn.Module):
    """The logit map [N, 1, h, w] -> (score [N, 1], heatmap [N, 1, 2h, 2w])."""

    smoothing: torch.Tensor | None

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("smoothing", None, persistent=False)

    def fix_size(self, size: int) -> None:
        """Average 3 x 3 as matrix products for size x size logit maps (the export form)."""
        self.smoothing = torch.from_numpy(window_matrix(size, 3)).float()

    def forward(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.smoothing is None:
            smooth = smooth_logits(logits)
        else:
            smooth = self.smoothing @ logits @ self.smoothing.T
        score = torch.sigmoid(torch.amax(smooth, dim=(2, 3)))
        return score, torch.sigmoid(repeat2(logits))


def smooth_logits(logits: torch.Tensor) -> torch.Tensor:
    """The 3x3-averaged logit map the slice score is the maximum of."""
    return functional.avg_pool2d(logits, 3, stride=1, padding=1, count_include_pad=False)


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
        self.readout = Readout()

    def fix_size(self, size: int) -> AnomalyNet:
        """Switch to the export form for size x size inputs: the same numbers, computed with ops
        OpenVINO runs fast (see the module's docstring). Returns the net."""
        self.front.fix_size(size)
        self.readout.fix_size(size // 2)
        return self

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """The lesion-logit map at half the input's resolution."""
        half = self.mid(self.widen(self.stem(self.front(image))))
        quarter = self.ctx2(self.ctx1(self.down(half)))
        up = functional.interpolate(quarter, scale_factor=2.0, mode="nearest")
        return self.head(self.fuse(torch.cat([up, half], dim=1)))  # type: ignore[no-any-return]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.readout(self.logits(image))  # type: ignore[no-any-return]


def load(path: Path) -> AnomalyNet:
    """The net with the weights of ``path`` (the recipe's ``torch/state_dict.npz``), in eval mode.

    The state dict is stored as plain arrays (no pickle), so loading it runs no code.
    """
    net = AnomalyNet()
    with np.load(path, allow_pickle=False) as arrays:
        state = {name: torch.from_numpy(arrays[name].copy()) for name in arrays.files}
    net.load_state_dict(state)
    return net.eval()
