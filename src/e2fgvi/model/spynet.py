"""Flow completion (E2FGVI §3.1 "flow completion module"; reference §3.2): SPyNet and flow warping.

SPyNet (Ranjan & Black, CVPR 2017) in the mmediting/BasicVSR form: six identical basic modules
refine a flow coarse-to-fine over a 6-level image pyramid. E2FGVI runs it on the masked local frames
at 1/4 resolution and trains it end to end; a second, frozen copy computes the flow-loss targets.
Flows are (dx, dy) in pixels; ``spynet(ref, supp)`` is the flow at ``ref`` that pulls ``supp`` onto
``ref`` through :func:`flow_warp`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_LEVELS = 6


def flow_warp(x: Tensor, flow: Tensor, padding_mode: str = "zeros") -> Tensor:
    """Sample ``x`` (n, c, h, w) at pixel grid + ``flow`` (n, 2, h, w); bilinear, align_corners."""
    _, _, h, w = x.shape
    # The sampling grid is built in fp32 even under autocast: bf16 cannot address 432 columns.
    flow = flow.float()
    rows = torch.arange(h, device=x.device, dtype=flow.dtype)
    cols = torch.arange(w, device=x.device, dtype=flow.dtype)
    grid_y, grid_x = torch.meshgrid(rows, cols, indexing="ij")
    # Same arithmetic order as the official code: add in pixels, then normalise by (size - 1).
    sample_x = grid_x + flow[:, 0]
    sample_y = grid_y + flow[:, 1]
    sample_x = 2.0 * sample_x / max(w - 1, 1) - 1.0
    sample_y = 2.0 * sample_y / max(h - 1, 1) - 1.0
    grid = torch.stack((sample_x, sample_y), dim=3)  # (n, h, w, 2)
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
    """One pyramid level: [ref RGB, warped supp RGB, flow] (8 ch) -> flow residual (2 ch)."""

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

    def compute_flow(self, ref: Tensor, supp: Tensor) -> Tensor:
        """Flow ref -> supp for images whose sides are multiples of 32."""
        n, _, h, w = ref.shape
        # Pyramid of normalised images, coarsest first.
        refs = [(ref - self.mean) / self.std]
        supps = [(supp - self.mean) / self.std]
        for _ in range(_LEVELS - 1):
            refs.append(F.avg_pool2d(refs[-1], kernel_size=2, stride=2, count_include_pad=False))
            supps.append(F.avg_pool2d(supps[-1], kernel_size=2, stride=2, count_include_pad=False))
        refs, supps = refs[::-1], supps[::-1]

        flow = ref.new_zeros(n, 2, h // 32, w // 32)
        for level, module in enumerate(self.basic_module):
            if level == 0:
                flow_up = flow
            else:
                flow_up = 2.0 * F.interpolate(
                    flow, scale_factor=2, mode="bilinear", align_corners=True
                )
            warped = flow_warp(supps[level], flow_up, padding_mode="border")
            flow = flow_up + module(torch.cat([refs[level], warped, flow_up], dim=1))
        return flow

    def forward(self, ref: Tensor, supp: Tensor) -> Tensor:
        """Flow (n, 2, h, w) at ``ref`` towards ``supp``; images (n, 3, h, w) in [0, 1]."""
        h, w = ref.shape[-2:]
        h_up, w_up = -(-h // 32) * 32, -(-w // 32) * 32
        ref = F.interpolate(ref, size=(h_up, w_up), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=(h_up, w_up), mode="bilinear", align_corners=False)
        flow = F.interpolate(
            self.compute_flow(ref, supp), size=(h, w), mode="bilinear", align_corners=False
        )
        # Flow is in pixels of the resized image: rescale u by w/w_up and v by h/h_up
        # (Python scalars: no host-to-device copy inside the forward).
        return torch.stack([flow[:, 0] * (w / w_up), flow[:, 1] * (h / h_up)], dim=1)


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
