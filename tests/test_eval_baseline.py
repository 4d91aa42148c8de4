"""The nearest-frame fill, the trivial baseline of benchmarks/convergence.py."""

from __future__ import annotations

import numpy as np
import pytest
from _clips import box_masks, carphone_frames, write_test_split

from e2fgvi.config import EvalParams
from e2fgvi.eval import metrics
from e2fgvi.eval.baseline import nearest_frame_fill, score_nearest_fill
from e2fgvi.eval.testset import load_frames, load_masks, read_index


def _video(t: int, h: int = 2, w: int = 3) -> np.ndarray:
    """Frame k is filled with value 10·(k+1), so a copied value names its source frame."""
    return np.stack([np.full((h, w, 3), 10 * (k + 1), np.uint8) for k in range(t)])


def test_a_hole_takes_the_nearest_frame_where_that_pixel_is_visible():
    frames, masks = _video(6), np.zeros((6, 2, 3), np.uint8)
    masks[1:4, 0, 0] = 1  # visible at frames 0 and 4
    out = nearest_frame_fill(frames, masks)
    assert out[1:4, 0, 0, 0].tolist() == [10, 10, 50]  # 1 -> 0; 2 ties -> earlier 0; 3 -> 4
    untouched = ~masks.astype(bool)
    assert np.array_equal(out[untouched], frames[untouched])


def test_holes_at_either_end_copy_from_the_only_side_that_has_the_pixel():
    frames, masks = _video(5), np.zeros((5, 2, 3), np.uint8)
    masks[:2, 1, 2] = 1
    masks[3:, 0, 1] = 1
    out = nearest_frame_fill(frames, masks)
    assert out[:2, 1, 2, 0].tolist() == [30, 30]
    assert out[3:, 0, 1, 0].tolist() == [30, 30]


def test_a_pixel_hidden_in_every_frame_takes_its_frames_visible_mean():
    frames = _video(2)
    frames[0, 1, :, :] = 200  # frame 0 visible pixels: 10,10 (row 0, cols 1-2) + 200 x3 (row 1)
    masks = np.zeros((2, 2, 3), np.uint8)
    masks[:, 0, 0] = 1
    out = nearest_frame_fill(frames, masks)
    assert out[0, 0, 0].tolist() == [round((10 * 2 + 200 * 3) / 5)] * 3
    assert out[1, 0, 0].tolist() == [20] * 3


def test_a_frame_that_is_all_hole_and_never_visible_is_mid_grey():
    frames, masks = _video(1), np.ones((1, 2, 3), np.uint8)
    assert (nearest_frame_fill(frames, masks) == 128).all()


def test_the_inputs_are_not_modified_and_shapes_are_checked():
    frames, masks = _video(3), np.ones((3, 2, 3), np.uint8)
    masks[1] = 0
    copy = frames.copy()
    nearest_frame_fill(frames, masks)
    assert np.array_equal(frames, copy)
    with pytest.raises(ValueError, match="need"):
        nearest_frame_fill(frames, masks[:2])


def _oracle(frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Pixel by pixel, the definition in the module docstring."""
    out = frames.copy()
    t, h, w = masks.shape
    for k in range(t):
        known = frames[k][masks[k] == 0]
        mean = np.round(known.mean(axis=0)) if len(known) else np.full(3, 128.0)
        for y in range(h):
            for x in range(w):
                if not masks[k, y, x]:
                    continue
                visible = [j for j in range(t) if not masks[j, y, x]]
                if visible:
                    out[k, y, x] = frames[min(visible, key=lambda j: (abs(j - k), j)), y, x]
                else:
                    out[k, y, x] = mean
    return out


def test_random_videos_match_a_pixel_by_pixel_oracle():
    rng = np.random.default_rng(0)
    for _ in range(20):
        t = int(rng.integers(1, 7))
        frames = rng.integers(0, 256, (t, 4, 5, 3), dtype=np.uint8)
        masks = (rng.random((t, 4, 5)) < rng.random()).astype(np.uint8)
        assert np.array_equal(nearest_frame_fill(frames, masks), _oracle(frames, masks))


def test_the_fill_is_scored_frame_weighted_and_beats_black_holes(tmp_path):
    videos = {
        "carA": (carphone_frames(12), box_masks(12, 144, 176)),
        "carB": (carphone_frames(14, start=40), box_masks(14, 144, 176)[::-1].copy()),
    }
    write_test_split(tmp_path, videos)
    cfg = EvalParams(width=176, height=144, mask_dilation=2, ssim_window=15)
    score = score_nearest_fill(tmp_path, cfg)
    psnrs, black = [], []
    for name, (_, _) in videos.items():
        count = read_index(tmp_path)[name]
        frames = load_frames(tmp_path, name, count, (176, 144))
        masks = load_masks(tmp_path, name, count, (176, 144), 2)
        filled = nearest_frame_fill(frames, masks)
        psnrs += [metrics.psnr(f, c) for f, c in zip(frames, filled, strict=True)]
        black += [
            metrics.psnr(f, f * (1 - m[..., None])) for f, m in zip(frames, masks, strict=True)
        ]
    assert (score.videos, score.frames) == (2, 26)
    assert score.psnr == pytest.approx(np.mean(psnrs), rel=1e-12)
    assert score.psnr > np.mean(black) + 3.0 and 0.0 < score.ssim < 1.0
