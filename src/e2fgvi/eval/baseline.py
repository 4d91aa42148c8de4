"""A trivial fill to measure a trained generator against: copy from the nearest unmasked frame.

Each hole pixel takes the value of the same pixel in the temporally nearest frame where that
pixel is not a hole (on a tie, the earlier frame). A pixel that is a hole in every frame takes
the mean colour of its own frame's unmasked pixels (mid-grey if the whole frame is a hole).
Scored with the evaluation protocol's frames, dilated masks and metrics (reference §5.1), it is
the floor a useful inpainting model must clear.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from e2fgvi.config import EvalParams
from e2fgvi.eval import metrics
from e2fgvi.eval.testset import load_frames, load_masks, read_index


def _nearest_valid(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For (t, h, w) ``valid``: the index of the nearest valid frame at or before / after each t.

    Missing neighbours are -1 (before) and ``t`` (after), i.e. outside the video.
    """
    t = valid.shape[0]
    steps = np.arange(t).reshape(-1, *([1] * (valid.ndim - 1)))
    before = np.maximum.accumulate(np.where(valid, steps, -1), axis=0)
    after = np.minimum.accumulate(np.where(valid, steps, t)[::-1], axis=0)[::-1]
    return before, after


def nearest_frame_fill(frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(t, h, w, 3) uint8 frames with every hole of (t, h, w) ``masks`` (nonzero = hole) filled.

    Pixels outside the holes are returned unchanged; the input arrays are not modified.
    """
    frames = np.asarray(frames)
    hole = np.asarray(masks) > 0
    if frames.shape[:3] != hole.shape or frames.ndim != 4:
        raise ValueError(
            f"need (t, h, w, 3) frames and (t, h, w) masks: {frames.shape}, {hole.shape}"
        )
    t = frames.shape[0]
    before, after = _nearest_valid(~hole)
    steps = np.arange(t).reshape(-1, 1, 1)
    has_before, has_after = before >= 0, after < t
    # Prefer the earlier frame on a tie, and whichever exists when only one does.
    take_after = has_after & (~has_before | (after - steps < steps - before))
    source = np.where(take_after, after, before)
    found = has_before | has_after
    rows, cols = np.indices(hole.shape[1:])
    copied = frames[np.clip(source, 0, t - 1), rows, cols]  # (t, h, w, 3)
    out = frames.copy()
    fill = hole & found
    out[fill] = copied[fill]
    for k in np.flatnonzero((hole & ~found).any(axis=(1, 2))):
        known = frames[k][~hole[k]]
        mean = known.mean(axis=0) if len(known) else np.full(frames.shape[-1], 127.5)
        out[k][hole[k] & ~found[k]] = np.round(mean).astype(frames.dtype)
    return out


@dataclass(frozen=True)
class FillScore:
    psnr: float  # frame-weighted mean, as the evaluation report
    ssim: float
    frames: int
    videos: int


def score_nearest_fill(root: Path, params: EvalParams) -> FillScore:
    """The nearest-frame fill scored on the prepared test split under the evaluation protocol."""
    index = read_index(root)
    videos = list(index)[: params.max_videos or None]
    size = (params.width, params.height)
    psnrs, ssims = [], []
    for video in videos:
        frames = load_frames(root, video, index[video], size)
        masks = load_masks(root, video, index[video], size, params.mask_dilation)
        filled = nearest_frame_fill(frames, masks)
        for gt, comp in zip(frames, filled, strict=True):
            psnrs.append(metrics.psnr(gt, comp))
            ssims.append(metrics.ssim(gt, comp, params.ssim_window))
    return FillScore(float(np.mean(psnrs)), float(np.mean(ssims)), len(psnrs), len(videos))
