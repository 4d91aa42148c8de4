"""Input-size rules of the two variants and the official mirror padding.

Facts: docs/official-e2fgvi.md §3.7, §3.9.

E2FGVI has a fixed 60x108 feature grid (its soft-composition bias), so it takes exactly 240x432
frames. E2FGVI-HQ takes any size whose sides are multiples of 4 and whose token grid splits into
5x9 attention windows; the official ``test.py`` mirror-pads frames up to multiples of 60x108 and
crops the output back, which :func:`pad_frames_for_hq` / :func:`crop_to_size` reproduce.
"""

from __future__ import annotations

import torch
from torch import Tensor

from e2fgvi.errors import UserError
from e2fgvi.model.embedding import token_grid

VARIANTS = ("e2fgvi", "e2fgvi_hq")
E2FGVI_SIZE = (240, 432)
WINDOW = (5, 9)
HQ_PAD_MULTIPLE = (60, 108)


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise UserError(f"unknown model variant {variant!r}: use one of {', '.join(VARIANTS)}")


def check_input_size(variant: str, h: int, w: int) -> None:
    """Raise a one-line UserError unless (h, w) frames fit ``variant``."""
    if variant == "e2fgvi":
        if (h, w) != E2FGVI_SIZE:
            raise UserError(
                f"E2FGVI takes exactly 240x432 (HxW) frames, got {h}x{w}: resize the frames to "
                "432x240, or use model variant e2fgvi_hq with pad_frames_for_hq"
            )
        return
    grid = token_grid(h // 4, w // 4)
    if h % 4 or w % 4 or grid[0] % WINDOW[0] or grid[1] % WINDOW[1]:
        raise UserError(
            f"E2FGVI-HQ cannot take {h}x{w} (HxW) frames: sides must be multiples of 4 and the "
            f"token grid ((H/4-1)//3+1, (W/4-1)//3+1) = {grid} multiples of {WINDOW}; "
            "mirror-pad with pad_frames_for_hq (multiples of 60x108)"
        )


def hq_pad_size(h: int, w: int) -> tuple[int, int]:
    """Padded (h, w): the next multiples of 60 and 108, as the official test.py pads."""
    mh, mw = HQ_PAD_MULTIPLE
    return h + (mh - h % mh) % mh, w + (mw - w % mw) % mw


def _mirror_extend(x: Tensor, dim: int, size: int) -> Tensor:
    """Append flipped copies of ``x`` along ``dim`` (symmetric padding) and cut to ``size``."""
    while x.shape[dim] < size:  # one round suffices unless the pad exceeds the side
        x = torch.cat([x, x.flip(dim)], dim=dim)
    return x.narrow(dim, 0, size)


def pad_frames_for_hq(frames: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """Mirror-pad (..., h, w) frames to multiples of 60x108; returns (padded, (h, w))."""
    h, w = frames.shape[-2:]
    padded_h, padded_w = hq_pad_size(h, w)
    padded = _mirror_extend(frames, frames.dim() - 2, padded_h)
    padded = _mirror_extend(padded, frames.dim() - 1, padded_w)
    return padded, (h, w)


def crop_to_size(frames: Tensor, size: tuple[int, int]) -> Tensor:
    """Inverse of :func:`pad_frames_for_hq`: keep the top-left (h, w) of (..., H, W) frames."""
    return frames[..., : size[0], : size[1]]
