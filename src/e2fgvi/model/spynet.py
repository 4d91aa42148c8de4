"""Flow completion (E2FGVI §3.1 "flow completion module"): SPyNet and flow warping.

Facts: docs/official-e2fgvi.md §3.2.

SPyNet (Ranjan & Black, CVPR 2017) in the mmediting/BasicVSR form: six identical basic modules
refine a flow coarse-to-fine over a 6-level image pyramid. E2FGVI runs it on the masked local frames
at 1/4 resolution and trains it end to end; a second, frozen copy computes the flow-loss targets.
Flows are (dx, dy) in pixels; ``spynet(target, source)`` is the flow at ``target`` that pulls
``source`` onto ``target`` through :func:`flow_warp`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_LEVELS = 6


def _to_unit_range(position: Tensor, size: int) -> Tensor:
    """Pixel coordinates to grid_sample's [-1, 1], whose ends are pixels 0 and size-1."""
    return 2.0 * position / max(size - 1, 1) - 1.0


def flow_warp(x: Tensor, flow: Tensor, padding_mode: str = "zeros") -> Tensor:
    """Sample ``x`` (n, c, h, w) at pixel grid + ``flow`` (n, 2, h, w); bilinear, align_corners."""
    _, _, h, w = x.shape
    # The sampling grid is built in fp32 even under autocast: bf16 cannot address 432 columns.
    flow = flow.float()
    column = torch.arange(w, device=x.device, dtype=flow.dtype)  # broadcasts over rows
    row = torch.arange(h, device=x.device, dtype=flow.dtype).view(h, 1)
    # Displace in pixels first, then rescale: the rounding the released weights were trained with.
    grid = torch.stack(
        (_to_unit_range(column + flow[:, 0], w), _to_unit_range(row + flow[:, 1], h)), dim=3
    )  # (n, h, w, 2) as (x, y)
    # Autocast runs grid_sample in fp32 itself; otherwise the grid must match x (e.g. bf16).
    if grid.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
        grid = grid.to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


class ConvModule(nn.Module):
    """A 7x7 conv with an optional ReLU; named ``conv`` like mmcv's ConvModule (checkpoint keys)."""

    def __init__(self, in_channels: int, out_channels: int, relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=7, stride=1, padding=3)
        self.relu = relu
        # mmcv ConvModule default init: kaiming normal, fan_out, relu gain, zero bias.
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return F.relu(x) if self.relu else x


class SPyNetBasicModule(nn.Module):
    """One pyramid level: [target RGB, warped source RGB, flow] (8 ch) -> flow residual (2 ch)."""

    def __init__(self) -> None:
        super().__init__()
        self.basic_module = nn.Sequential(
            ConvModule(8, 32),
            ConvModule(32, 64),
            ConvModule(64, 32),
            ConvModule(32, 16),
            ConvModule(16, 2, relu=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.basic_module(x)


class SPyNet(nn.Module):
    """Spatial-pyramid optical flow, randomly initialised (``build.load_spynet_weights`` loads)."""

    def __init__(self) -> None:
        super().__init__()
        self.basic_module = nn.ModuleList(SPyNetBasicModule() for _ in range(_LEVELS))
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def _pyramid(self, image: Tensor) -> list[Tensor]:
        """The ImageNet-normalised image and its five 2x2-averaged halvings, coarsest first."""
        levels = [(image - self.mean) / self.std]
        while len(levels) < _LEVELS:
            levels.append(
                F.avg_pool2d(levels[-1], kernel_size=2, stride=2, count_include_pad=False)
            )
        return levels[::-1]

    def compute_flow(self, target: Tensor, source: Tensor) -> Tensor:
        """Flow at ``target`` towards ``source``, for images whose sides are multiples of 32."""
        n, _, h, w = target.shape
        flow = target.new_zeros(n, 2, h // 32, w // 32)
        levels = zip(self._pyramid(target), self._pyramid(source), self.basic_module, strict=True)
        for level, (target_level, source_level, refine) in enumerate(levels):
            if level > 0:  # one level finer: twice the pixels, so twice the displacement
                flow = 2.0 * F.interpolate(
                    flow, scale_factor=2, mode="bilinear", align_corners=True
                )
            pulled = flow_warp(source_level, flow, padding_mode="border")
            flow = flow + refine(torch.cat([target_level, pulled, flow], dim=1))
        return flow

    def forward(self, target: Tensor, source: Tensor) -> Tensor:
        """Flow (n, 2, h, w) at ``target`` towards ``source``; images (n, 3, h, w) in [0, 1]."""
        h, w = target.shape[-2:]
        # Five halvings need sides divisible by 32: run on images resized up to that, then
        # resize the flow back and convert it to this image's pixels.
        big_h, big_w = -(-h // 32) * 32, -(-w // 32) * 32
        flow = self.compute_flow(_resize(target, (big_h, big_w)), _resize(source, (big_h, big_w)))
        flow = _resize(flow, (h, w))
        # Python scalars: no host-to-device copy inside the forward.
        return torch.stack([flow[:, 0] * (w / big_w), flow[:, 1] * (h / big_h)], dim=1)


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def quarter_resolution(frames: Tensor) -> Tensor:
    """Bilinear 1/4 downsampling of (b, t, c, h, w) frames, with the official flags."""
    b, t, c, h, w = frames.shape
    small = F.interpolate(
        frames.reshape(b * t, c, h, w),
        scale_factor=1 / 4,
        mode="bilinear",
        align_corners=True,
        recompute_scale_factor=True,
    )
    return small.reshape(b, t, c, h // 4, w // 4)


def bidirectional_flows(spynet: SPyNet, local_frames: Tensor) -> tuple[Tensor, Tensor]:
    """Forward (i -> i+1) and backward (i+1 -> i) flows between consecutive local frames.

    ``local_frames`` is (b, l_t, 3, h, w) in [0, 1]; each result is (b, l_t - 1, 2, h/4, w/4).
    Used both by the generator (masked frames) and by the flow-loss teacher (clean frames).
    """
    small = quarter_resolution(local_frames)  # (b, l_t, 3, h/4, w/4)
    b, l_t, c, h, w = small.shape
    earlier = small[:, :-1].reshape(-1, c, h, w)
    later = small[:, 1:].reshape(-1, c, h, w)
    # One SPyNet call for both directions: [fwd pairs; bwd pairs] along the batch axis.
    flows = spynet(torch.cat([earlier, later]), torch.cat([later, earlier]))
    forward, backward = flows.chunk(2, dim=0)
    return forward.reshape(b, l_t - 1, 2, h, w), backward.reshape(b, l_t - 1, 2, h, w)
