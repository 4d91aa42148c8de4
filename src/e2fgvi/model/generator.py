"""The E2FGVI generator (Li et al., CVPR 2022, §3 and Fig. 2; docs/official-e2fgvi.md §3.1-§3.9).

Masked frames -> flow completion on the local frames (SPyNet) -> frame-wise CNN encoder ->
flow-guided feature propagation over the local features -> soft split -> 8 temporal focal
transformer blocks -> soft composition (residual) -> decoder -> tanh. The HQ variant differs only
in soft composition (3x3 conv instead of a fixed-size bias), so it is a constructor argument.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from e2fgvi.errors import UserError
from e2fgvi.model.embedding import SoftComp, SoftSplit
from e2fgvi.model.feature_propagation import (
    BidirectionalPropagation,
    SecondOrderDeformableAlignment,
)
from e2fgvi.model.focal_transformer import TemporalFocalTransformerBlock
from e2fgvi.model.sizes import check_input_size, check_variant
from e2fgvi.model.spynet import SPyNet, bidirectional_flows

CHANNELS = 128  # feature channels at 1/4 resolution (official "channel // 2")
HIDDEN = 512  # token width
DEPTH = 8  # transformer blocks
ENCODER_GROUPS = (1, 2, 4, 8, 1)  # groups of the five convs after the stem
_STEM_LAYERS = 8  # four convs + LeakyReLUs down to 1/4 resolution


def interleave_groups(stem: Tensor, current: Tensor, groups: int) -> Tensor:
    """Concat two maps group by group: [stem 0, current 0, stem 1, current 1, ...].

    So that a grouped conv gives each of its groups a share of both maps.
    """
    n, _, h, w = current.shape
    both = (stem.reshape(n, groups, -1, h, w), current.reshape(n, groups, -1, h, w))
    return torch.cat(both, dim=2).reshape(n, -1, h, w)


class Encoder(nn.Module):
    """Frame-wise CNN to (n, 128, h/4, w/4); the last four convs see the stem interleaved."""

    def __init__(self) -> None:
        super().__init__()
        specs = [  # (in, out, stride, groups)
            (3, 64, 2, 1),
            (64, 64, 1, 1),
            (64, 128, 2, 1),
            (128, 256, 1, 1),
            (256, 384, 1, 1),
            (640, 512, 1, 2),
            (768, 384, 1, 4),
            (640, 256, 1, 8),
            (512, 128, 1, 1),
        ]
        layers: list[nn.Module] = []
        for c_in, c_out, stride, groups in specs:
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, groups=groups),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        self.layers = nn.ModuleList(layers)

    def forward(self, frames: Tensor) -> Tensor:
        """(n, 3, h, w) -> (n, 128, h/4, w/4)."""
        x = frames
        for layer in self.layers[:_STEM_LAYERS]:
            x = layer(x)
        stem = x  # (n, 256, h/4, w/4): every later grouped conv sees it again
        for k, groups in enumerate(ENCODER_GROUPS):
            conv, act = self.layers[_STEM_LAYERS + 2 * k], self.layers[_STEM_LAYERS + 2 * k + 1]
            x = act(conv(x if k == 0 else interleave_groups(stem, x, groups)))
        return x


class Deconv(nn.Module):
    """Bilinear x2 upsampling (align_corners=True) then a 3x3 conv; not a transposed conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))


def _decoder() -> nn.Sequential:
    return nn.Sequential(
        Deconv(CHANNELS, 128),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(128, 64, kernel_size=3, stride=1, padding=1),
        nn.LeakyReLU(0.2, inplace=True),
        Deconv(64, 64),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(64, 3, kernel_size=3, stride=1, padding=1),
    )


def init_generator_weights(module: nn.Module) -> None:
    """Official init (official-e2fgvi.md §3.8): N(0, 0.02) Conv/Linear, zero bias; DCN as in mmcv.

    Applied before the SPyNet is attached, so the SPyNet keeps its own init (or weights).
    LayerNorm stays (1, 0) and the soft-composition bias stays 0.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, SecondOrderDeformableAlignment):
            m.reset_dcn_parameters()
            m.zero_offset_head()


class InpaintGenerator(nn.Module):
    """E2FGVI (``variant="e2fgvi"``) or E2FGVI-HQ (``"e2fgvi_hq"``); SPyNet randomly initialised."""

    def __init__(self, variant: str = "e2fgvi") -> None:
        super().__init__()
        check_variant(variant)
        self.variant = variant
        self.encoder = Encoder()
        self.decoder = _decoder()
        self.feat_prop_module = BidirectionalPropagation(CHANNELS)
        self.ss = SoftSplit(CHANNELS, HIDDEN)
        self.sc = SoftComp(CHANNELS, HIDDEN, hq=variant == "e2fgvi_hq")
        self.transformer = nn.ModuleList(
            TemporalFocalTransformerBlock(HIDDEN) for _ in range(DEPTH)
        )
        init_generator_weights(self)
        self.update_spynet = SPyNet()

    def forward(
        self, masked_frames: Tensor, num_local_frames: int
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Inpaint (b, t, 3, H, W) frames in [-1, 1] (holes zeroed); the first ``local`` are local.

        Returns (b*t, 3, H, W) frames in (-1, 1) and the completed local flows
        (forward i -> i+1, backward i+1 -> i), each (b, local - 1, 2, H/4, W/4).
        """
        b, t, *_ = self._check_input(masked_frames, num_local_frames)
        local = num_local_frames

        # Flow completion: SPyNet on the masked local frames, mapped to [0, 1].
        flows = bidirectional_flows(self.update_spynet, (masked_frames[:, :local] + 1) / 2)

        # Frame-wise encoding; flow-guided propagation among the local frames' features only.
        features = self.encoder(masked_frames.flatten(0, 1))  # (b*t, 128, h/4, w/4)
        grid = tuple(features.shape[-2:])
        features = features.unflatten(0, (b, t))
        propagated = self.feat_prop_module(features[:, :local], *flows)
        features = torch.cat([propagated, features[:, local:]], dim=1)  # (b, t, 128, h/4, w/4)

        # Content hallucination: tokens through the focal transformer, back to a residual map.
        tokens = self.ss(features.flatten(0, 1), b)  # (b, t, f_h, f_w, 512)
        for block in self.transformer:
            tokens = block(tokens, grid)
        features = features + self.sc(tokens, grid).unflatten(0, (b, t))

        # Every frame, local and reference, is decoded.
        frames = torch.tanh(self.decoder(features.flatten(0, 1)))  # (b*t, 3, h, w)
        return frames, flows

    def _check_input(self, frames: Tensor, num_local_frames: int) -> tuple[int, ...]:
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise UserError(
                f"generator input must be (B, T, 3, H, W) frames, got shape {tuple(frames.shape)}"
            )
        b, t, c, h, w = frames.shape
        if not 1 <= num_local_frames <= t:
            raise UserError(f"num_local_frames must be in [1, T={t}], got {num_local_frames}")
        check_input_size(self.variant, h, w)
        return b, t, c, h, w
