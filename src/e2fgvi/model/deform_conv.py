"""The modulated deformable 3x3 convolution (DCNv2) two ways: torchvision's kernel or stock ops.

``torchvision`` runs ``torchvision.ops.deform_conv2d`` (the default; the same kernel the official
code reaches through mmcv). ``sampled`` computes the same operation with ``grid_sample`` and one
matmul: every (offset group, kernel tap) samples its channels bilinearly at the offset position
(zeros outside the frame, as the deformable kernel does), the samples are multiplied by the
modulation mask, and the weight contracts (channel, tap) as an ordinary convolution would. Both
read the offsets in mmcv's layout: per group, for each tap (row-major), (dy, dx).

The two agree to float rounding (forward and gradients of input, weight, bias, mask and offset),
except for the offset gradient of a sample landing exactly on an integer coordinate, where
bilinear sampling has a kink and each implementation takes a different one-sided derivative.
On the CPU the sampled form is about 4x faster for forward + backward (docs/speed.md); it uses
more memory: it keeps the (c_in x 9, h x w) sampled columns for the backward pass.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import deform_conv2d

DeformConv = Literal["torchvision", "sampled"]
FORMULATIONS: tuple[DeformConv, ...] = ("torchvision", "sampled")


def deform_conv3x3_sampled(
    x: Tensor, offset: Tensor, weight: Tensor, bias: Tensor, mask: Tensor
) -> Tensor:
    """3x3, stride 1, padding 1, dilation 1 modulated deformable conv by ``grid_sample``.

    x (n, c_in, h, w); offset (n, 2 * g * 9, h, w); mask (n, g * 9, h, w); weight
    (c_out, c_in, 3, 3); bias (c_out,). Returns (n, c_out, h, w).
    """
    n, c, h, w = x.shape
    g = offset.shape[1] // 18
    taps = torch.arange(9, device=x.device, dtype=x.dtype)
    rows = torch.arange(h, device=x.device, dtype=x.dtype)
    cols = torch.arange(w, device=x.device, dtype=x.dtype)
    base_y = (torch.div(taps, 3, rounding_mode="floor") - 1).view(1, 1, 9, 1, 1) + rows.view(
        1, 1, 1, h, 1
    )
    base_x = (taps % 3 - 1).view(1, 1, 9, 1, 1) + cols.view(1, 1, 1, 1, w)
    off = offset.view(n, g, 9, 2, h, w)
    y = base_y + off[:, :, :, 0]  # (n, g, 9, h, w): sampling rows, in pixels
    xx = base_x + off[:, :, :, 1]
    # Pixel centres at (i + 0.5) * 2 / size - 1 (align_corners=False): defined for any size.
    grid = torch.stack([(2 * xx + 1) / w - 1, (2 * y + 1) / h - 1], dim=-1)
    sampled = F.grid_sample(
        x.reshape(n * g, c // g, h, w),
        grid.reshape(n * g, 9 * h, w, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (n * g, c / g, 9 * h, w)
    sampled = sampled.view(n, g, c // g, 9, h, w) * mask.view(n, g, 1, 9, h, w)
    columns = sampled.reshape(n, c * 9, h * w)  # channel-major, tap-minor: the weight's layout
    out = torch.matmul(weight.reshape(weight.shape[0], c * 9), columns)
    return out.view(n, -1, h, w) + bias.view(1, -1, 1, 1)


def modulated_deform_conv3x3(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor,
    mask: Tensor,
    formulation: DeformConv = "torchvision",
) -> Tensor:
    """The alignment's deformable conv, always in fp32 and outside autocast (neither formulation
    has a half-precision path that pays: torchvision's CPU kernel has none, its CUDA autocast rule
    runs fp32, and ``grid_sample`` stays fp32 under autocast; bf16 measured no faster).
    """
    if formulation not in FORMULATIONS:
        raise ValueError(f"unknown deformable conv formulation {formulation!r}")
    args = (x.float(), offset.float(), weight.float(), bias.float(), mask.float())
    with torch.autocast(x.device.type, enabled=False):
        if formulation == "sampled":
            return deform_conv3x3_sampled(*args)
        x, offset, weight, bias, mask = args
        return deform_conv2d(x, offset, weight, bias, padding=(1, 1), mask=mask)
