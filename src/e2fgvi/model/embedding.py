"""Soft split and soft composition (E2FGVI §3.3, after FuseFormer; docs/official-e2fgvi.md §3.4).

Soft split cuts the (b*t, 128, h/4, w/4) feature map into overlapping 7x7 patches (stride 3,
padding 3), flattens each as channel-major then 7x7 position (6272 values) and embeds it into a
512-d token. Soft composition maps tokens back to 6272 values and folds them as an overlap *sum*.
E2FGVI then adds a learned per-position bias (fixed 60x108 grid); E2FGVI-HQ applies a 3x3 conv
instead, which lets it run at any size whose token grid fits the attention windows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KERNEL = (7, 7)
STRIDE = (3, 3)
PADDING = (3, 3)
E2FGVI_FEATURE_SIZE = (60, 108)  # the fixed 1/4-resolution grid of a 240x432 frame


def token_grid(h: int, w: int) -> tuple[int, int]:
    """Number of patch rows and columns for an (h, w) feature map."""
    return (
        (h + 2 * PADDING[0] - KERNEL[0]) // STRIDE[0] + 1,
        (w + 2 * PADDING[1] - KERNEL[1]) // STRIDE[1] + 1,
    )


def unfold_patches(x: Tensor) -> Tensor:
    """(n, c, h, w) -> (n, tokens, c*49), patch values channel-major then row-major 7x7."""
    return F.unfold(x, KERNEL, padding=PADDING, stride=STRIDE).transpose(1, 2)


def fold_patches(tokens: Tensor, output_size: tuple[int, int]) -> Tensor:
    """(n, tokens, c*49) -> (n, c, h, w), summing overlapping patches (inverse layout of unfold)."""
    return F.fold(tokens.transpose(1, 2), output_size, KERNEL, padding=PADDING, stride=STRIDE)


class SoftSplit(nn.Module):
    """Overlapping patch embedding: (b*t, c, h, w) -> tokens (b, t, f_h, f_w, hidden)."""

    def __init__(self, channels: int = 128, hidden: int = 512) -> None:
        super().__init__()
        self.embedding = nn.Linear(channels * KERNEL[0] * KERNEL[1], hidden)

    def forward(self, x: Tensor, b: int) -> Tensor:
        f_h, f_w = token_grid(*x.shape[-2:])
        tokens = self.embedding(unfold_patches(x))  # (b*t, f_h*f_w, hidden)
        return tokens.reshape(b, -1, f_h, f_w, tokens.shape[-1])


class SoftComp(nn.Module):
    """Tokens (b, t, f_h, f_w, hidden) -> feature map (b*t, c, h, w) by overlap-sum folding.

    ``hq=False`` (E2FGVI) adds the learned bias ``bias`` (c, 60, 108); ``hq=True`` applies the
    3x3 ``bias_conv`` to the folded map.
    """

    def __init__(self, channels: int = 128, hidden: int = 512, hq: bool = False) -> None:
        super().__init__()
        self.hq = hq
        self.embedding = nn.Linear(hidden, channels * KERNEL[0] * KERNEL[1])
        if hq:
            self.bias_conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)
        else:
            self.bias = nn.Parameter(torch.zeros(channels, *E2FGVI_FEATURE_SIZE))

    def forward(self, tokens: Tensor, output_size: tuple[int, int]) -> Tensor:
        b, t, f_h, f_w, hidden = tokens.shape
        values = self.embedding(tokens.reshape(b * t, f_h * f_w, hidden))  # (b*t, L, c*49)
        folded = fold_patches(values, output_size)  # (b*t, c, h, w)
        if self.hq:
            return self.bias_conv(folded)
        return folded + self.bias.unsqueeze(0)
