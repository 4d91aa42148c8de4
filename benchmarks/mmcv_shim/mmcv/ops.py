"""``ModulatedDeformConv2d`` (DCNv2) on top of ``torchvision.ops.deform_conv2d``.

mmcv and torchvision lay out offsets the same way (per offset group, per kernel tap, (dy, dx))
and the modulation mask as (n, groups * kh * kw, h, w), so the tensors pass through unchanged;
torchvision infers the weight groups and offset groups from the tensor shapes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d


def modulated_deform_conv2d(
    x: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    deform_groups: int = 1,
) -> Tensor:
    """mmcv's functional signature; ``groups`` / ``deform_groups`` are implied by the shapes."""
    if x.shape[1] != weight.shape[1] * groups:
        raise ValueError(f"weight {tuple(weight.shape)} does not fit {groups} groups of {x.shape}")
    if offset.shape[1] != 2 * deform_groups * weight.shape[2] * weight.shape[3]:
        raise ValueError(f"offset {tuple(offset.shape)} does not fit {deform_groups} groups")
    return deform_conv2d(
        x,
        offset,
        weight,
        bias,
        stride=_pair(stride),
        padding=_pair(padding),
        dilation=_pair(dilation),
        mask=mask,
    )


class ModulatedDeformConv2d(nn.Module):
    """Parameters ``weight`` (out, in / groups, kh, kw) and ``bias`` (out), as mmcv names them."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        deform_groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.groups, self.deform_groups = groups, deform_groups
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, *self.kernel_size)
        )
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.init_weights()

    def init_weights(self) -> None:
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        return modulated_deform_conv2d(
            x,
            offset,
            mask,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.deform_groups,
        )
