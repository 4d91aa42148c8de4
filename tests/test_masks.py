"""The random mask generator: shape, purity and the official hole/motion statistics."""

from __future__ import annotations

import numpy as np
import pytest

from e2fgvi.config import MaskParams
from e2fgvi.data.masks import random_mask_sequence, random_shape, random_vertices, rasterise

CFG = MaskParams()
H, W = 240, 432


def _centroids(masks: np.ndarray) -> np.ndarray:
    """(T, 2) hole centroids (row, col)."""
    area = masks.sum(axis=(1, 2)).astype(float)
    rows = masks.sum(axis=2) @ np.arange(masks.shape[1]) / area
    cols = masks.sum(axis=1) @ np.arange(masks.shape[2]) / area
    return np.stack([rows, cols], axis=1)


def test_output_type_and_values():
    masks = random_mask_sequence(np.random.default_rng(0), 7, 60, 108, CFG)
    assert masks.shape == (7, 60, 108) and masks.dtype == np.uint8
    assert set(np.unique(masks)) == {0, 1}


def test_pure_and_seeded():
    state = np.random.get_state()
    a = random_mask_sequence(np.random.default_rng(5), 10, H, W, CFG)
    b = random_mask_sequence(np.random.default_rng(5), 10, H, W, CFG)
    c = random_mask_sequence(np.random.default_rng(6), 10, H, W, CFG)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # The legacy global RNG is untouched.
    assert np.array_equal(np.random.get_state()[1], state[1])


@pytest.mark.parametrize("moving_prob", [0.0, 1.0])
def test_chosen_frames_are_those_of_the_whole_video(moving_prob):
    ids = [7, 8, 9, 10, 11, 0, 25, 39]  # a training clip: 5 local frames, then 3 references
    whole = random_mask_sequence(np.random.default_rng(9), 40, H, W, CFG, moving_prob)
    some = random_mask_sequence(np.random.default_rng(9), 40, H, W, CFG, moving_prob, frames=ids)
    assert np.array_equal(some, whole[ids])
    with pytest.raises(ValueError, match="outside a 40-frame video"):
        random_mask_sequence(np.random.default_rng(9), 40, H, W, CFG, frames=[40])


def test_stationary_and_moving_prob_override():
    rng = np.random.default_rng(1)
    for _ in range(5):
        still = random_mask_sequence(rng, 12, H, W, CFG, moving_prob=0.0)
        assert (still == still[0]).all()
    moved = [random_mask_sequence(rng, 12, H, W, CFG, moving_prob=1.0) for _ in range(5)]
    assert sum(not (m == m[0]).all() for m in moved) >= 4


def test_shape_is_constant_within_a_video_and_stays_inside():
    rng = np.random.default_rng(2)
    for _ in range(10):
        masks = random_mask_sequence(rng, 30, H, W, CFG, moving_prob=1.0)
        areas = masks.sum(axis=(1, 2))
        assert (areas == areas[0]).all() and areas[0] > 0


def test_shape_fills_about_56_percent_of_the_requested_box():
    rng = np.random.default_rng(3)
    ratios = []
    for _ in range(100):
        h, w = int(rng.integers(80, 240)), int(rng.integers(144, 432))
        shape = random_shape(rng, h, w)
        ratios.append((shape.shape[0] / h, shape.shape[1] / w))
    mean_h, mean_w = np.mean(ratios, axis=0)
    assert 0.52 < mean_h < 0.60 and 0.52 < mean_w < 0.60


def test_rejects_empty_sequence():
    with pytest.raises(ValueError, match="num_frames"):
        random_mask_sequence(np.random.default_rng(0), 0, H, W, CFG)


def test_statistics_match_the_official_generator():
    """300 masks of 50 frames at 240×432 against the official figures (official-e2fgvi.md §2.4).

    Official (Matplotlib pipeline, our measurement on 3,000 samples): hole share mean 7.7 %
    (reference: 7.2 % on 300), median 6.9 %; 50 % moving; centroid speed 3.0 px/frame at 50 frames.
    Bands are about 3 standard errors wide for 300 samples.
    """
    rng = np.random.default_rng(2022)
    shares, speeds = [], []
    for _ in range(300):
        masks = random_mask_sequence(rng, 50, H, W, CFG)
        shares.append(masks[0].mean())
        steps = np.linalg.norm(np.diff(_centroids(masks), axis=0), axis=1)
        if steps.any():
            speeds.append(steps.mean())
    shares_pct = 100 * np.asarray(shares)
    assert 6.6 < shares_pct.mean() < 8.4, shares_pct.mean()
    assert 5.8 < np.median(shares_pct) < 7.8, np.median(shares_pct)
    assert shares_pct.min() > 1.0 and shares_pct.max() < 30.0
    assert 0.41 < len(speeds) / 300 < 0.59, len(speeds)
    assert 2.5 < np.mean(speeds) < 3.5, np.mean(speeds)


# The oracle below redraws control points the way the official E2FGVI code does in core/utils.py:
# get_random_shape (called by create_random_shape_with_random_motion, the training-mask
# generator) fills a Matplotlib PathPatch of cubic Bezier curves on a default figure, reads the
# canvas back and resizes it with cv2; our rasteriser must cover almost the same pixels.
def _matplotlib_rendering(verts: np.ndarray, height: int, width: int) -> np.ndarray:
    """The official rasterisation route: a filled PathPatch on a default figure, read back."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import patches
    from matplotlib import pyplot as plt
    from matplotlib.path import Path

    codes = np.full(len(verts), Path.CURVE4)
    codes[0] = Path.MOVETO
    fig = plt.figure()
    axes = fig.add_subplot(111)
    axes.add_patch(patches.PathPatch(Path(verts, codes), facecolor="black", lw=2))
    axes.set_xlim(verts.min() * 1.1, verts.max() * 1.1)
    axes.set_ylim(verts.min() * 1.1, verts.max() * 1.1)
    axes.axis("off")
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy()
    plt.close(fig)
    return (cv2.resize(rgb, (width, height))[:, :, 0] == 0).astype(np.uint8)


def test_rasterisation_matches_matplotlib_pixel_for_pixel():
    """Same control points, drawn by us and by Matplotlib: the holes overlap almost exactly."""
    rng = np.random.default_rng(4)
    for height, width in ((160, 300), (90, 200), (230, 420)):
        verts = random_vertices(rng)
        ours, theirs = rasterise(verts, height, width), _matplotlib_rendering(verts, height, width)
        iou = (ours & theirs).sum() / (ours | theirs).sum()
        assert iou > 0.95, (height, width, iou)
        assert abs(int(ours.sum()) - int(theirs.sum())) < 0.05 * theirs.sum()


def test_bad_speed_range_and_unsafe_video_ids(tmp_path):
    from e2fgvi.data.masks import write_eval_masks
    from e2fgvi.errors import UserError

    bad = MaskParams(initial_speed_range=[3.0])
    with pytest.raises(UserError, match=r"masks\.initial_speed_range: expected \[low, high\]"):
        random_mask_sequence(np.random.default_rng(0), 3, H, W, bad)
    with pytest.raises(UserError, match="not a plain file name"):
        write_eval_masks({"../escape": 2}, tmp_path / "m", CFG)
    assert not (tmp_path / "escape").exists()
