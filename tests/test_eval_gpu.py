"""GPU speed path: windows batched under bfloat16 autocast stay within a stated tolerance of fp32.

Tolerance (per clip, inside the dilated holes, uint8 levels): mean |bf16 - fp32| <= 1.5 and frame
PSNR against the ground truth within 0.2 dB on average. Outside the holes both are the ground
truth exactly. Random generator weights (seeded); the official checkpoints are not available here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _clips import box_masks, carphone_frames
from PIL import Image

from e2fgvi.eval import metrics
from e2fgvi.eval.generator import as_window_model
from e2fgvi.eval.protocol import complete_video, dilate_mask


def _completed(model, frames, masks, device, **kwargs) -> np.ndarray:
    out = complete_video(
        model, frames, masks, neighbor_stride=5, ref_length=10, device=device, **kwargs
    )
    return np.stack([comp for _, comp in out])


@pytest.mark.gpu
@pytest.mark.parametrize("variant", ["e2fgvi", "e2fgvi_hq"])
def test_bf16_batched_windows_match_fp32(variant):
    from e2fgvi.model import InpaintGenerator

    device = torch.device("cuda")
    torch.manual_seed(0)
    model = as_window_model(InpaintGenerator(variant).eval().to(device), variant)
    frames = np.stack(
        [
            np.asarray(Image.fromarray(f).resize((432, 240), Image.BICUBIC))
            for f in carphone_frames(23)
        ]
    )
    small = box_masks(23, 144, 176)
    masks = np.stack(
        [
            dilate_mask(np.asarray(Image.fromarray(m).resize((432, 240), Image.NEAREST)), 4)
            for m in small
        ]
    )
    ref = _completed(model, frames, masks, device)
    fast = _completed(model, frames, masks, device, window_batch=4, amp_dtype=torch.bfloat16)
    hole = masks.astype(bool)
    assert np.array_equal(ref[~hole], fast[~hole])
    assert np.abs(ref - fast)[hole].mean() <= 1.5
    gap = [
        metrics.psnr(g, a) - metrics.psnr(g, b) for g, a, b in zip(frames, ref, fast, strict=True)
    ]
    assert abs(float(np.mean(gap))) <= 0.2
