"""The E2FGVI generator (Li et al., CVPR 2022, §3 and Fig. 2; reference §3.1-§3.9).

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
ENCODER_GROUPS = (1, 2, 4, 8, 1)  # groups of convs 8, 10, 12, 14, 16


def interleave_groups(x0: Tensor, out: Tensor, groups: int) -> Tensor:
    """Concat two maps group by group: [x0 chunk 0, out chunk 0, x0 chunk 1, out chunk 1, ...]."""
    n, _, h, w = out.shape
    x0 = x0.reshape(n, groups, -1, h, w)
    out = out.reshape(n, groups, -1, h, w)
    return torch.cat([x0, out], dim=2).reshape(n, -1, h, w)


class Encoder(nn.Module):
    """Frame-wise CNN to (n, 128, h/4, w/4); the last four convs see x0 group-interleaved."""

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

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            if i == 8:
                x0 = x  # (n, 256, h/4, w/4) after conv 6 and its LeakyReLU
            if i > 8 and i % 2 == 0:
                x = interleave_groups(x0, x, ENCODER_GROUPS[(i - 8) // 2])
            x = layer(x)
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
    """Official init (reference §3.8): N(0, 0.02) Conv/Linear, zero bias; DCN as in mmcv.

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
        """Inpaint (b, t, 3, H, W) frames in [-1, 1] (holes zeroed); the first l_t are local.

        Returns (b*t, 3, H, W) frames in (-1, 1) and the completed local flows
        (forward i -> i+1, backward i+1 -> i), each (b, l_t - 1, 2, H/4, W/4).
        """
        b, t, c, h, w = self._check_input(masked_frames, num_local_frames)
        l_t = num_local_frames

        # Flow completion on the masked local frames, mapped to [0, 1].
        flows = bidirectional_flows(self.update_spynet, (masked_frames[:, :l_t] + 1) / 2)

        # Frame-wise encoding, then flow-guided propagation among the local features.
        enc_feat = self.encoder(masked_frames.reshape(b * t, c, h, w))  # (b*t, 128, h/4, w/4)
        _, c_feat, h_feat, w_feat = enc_feat.shape
        enc_feat = enc_feat.reshape(b, t, c_feat, h_feat, w_feat)
        local_feat = self.feat_prop_module(enc_feat[:, :l_t], *flows)
        enc_feat = torch.cat([local_feat, enc_feat[:, l_t:]], dim=1)  # (b, t, 128, h/4, w/4)

        # Content hallucination: soft split, focal transformer blocks, soft composition.
        output_size = (h_feat, w_feat)
        tokens = self.ss(enc_feat.reshape(b * t, c_feat, h_feat, w_feat), b)  # (b, t, fh, fw, 512)
        for block in self.transformer:
            tokens = block(tokens, output_size)
        trans_feat = self.sc(tokens, output_size)  # (b*t, 128, h/4, w/4)
        enc_feat = enc_feat + trans_feat.reshape(b, t, c_feat, h_feat, w_feat)

        # Decode every frame (local and reference).
        output = self.decoder(enc_feat.reshape(b * t, c_feat, h_feat, w_feat))
        return torch.tanh(output), flows

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
