"""Temporal PatchGAN discriminator (E2FGVI §3.4, from STTN/FuseFormer; official-e2fgvi.md §3.10).

Six 3x5x5 Conv3d layers with stride (1, 2, 2) over (b, 3, t, h, w) clips; the first five are
spectral-normalised, bias-free and followed by LeakyReLU(0.2); the last is a plain conv with bias.
The output keeps the time axis: (b, t, 128, h', w') patch logits (no sigmoid for the hinge loss).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

NF = 32
KERNEL = (3, 5, 5)
STRIDE = (1, 2, 2)


class Discriminator(nn.Module):
    """T-PatchGAN; spectral norm as torch.nn.utils.spectral_norm (u, v updated in train mode)."""

    def __init__(
        self, in_channels: int = 3, use_sigmoid: bool = False, use_spectral_norm: bool = True
    ) -> None:
        super().__init__()
        self.use_sigmoid = use_sigmoid
        widths = [in_channels, NF, 2 * NF, 4 * NF, 4 * NF, 4 * NF]
        layers: list[nn.Module] = []
        for i in range(5):
            padding = 1 if i == 0 else (1, 2, 2)  # official: the first conv pads 1 on all dims
            conv = nn.Conv3d(
                widths[i], widths[i + 1], KERNEL, STRIDE, padding, bias=not use_spectral_norm
            )
            layers += [spectral_norm(conv) if use_spectral_norm else conv]
            layers += [nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv3d(4 * NF, 4 * NF, KERNEL, STRIDE, (1, 2, 2)))
        self.conv = nn.Sequential(*layers)
        self._init_weights()

    def _init_weights(self) -> None:
        """N(0, 0.02) on every conv weight (``weight_orig`` under spectral norm), zero biases."""
        for m in self.conv:
            if isinstance(m, nn.Conv3d):
                weight = m.weight_orig if hasattr(m, "weight_orig") else m.weight
                nn.init.normal_(weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, clips: Tensor) -> Tensor:
        """(b, t, c, h, w) -> (b, t, 128, h', w')."""
        logits = self.conv(clips.transpose(1, 2))  # Conv3d wants (b, c, t, h, w)
        scores = torch.sigmoid(logits) if self.use_sigmoid else logits
        return scores.transpose(1, 2)
