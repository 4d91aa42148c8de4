"""The official sliding-window protocol: schedule, averaging weights, dilation, compositing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation, generate_binary_structure

from e2fgvi.eval.protocol import (
    complete_video,
    composite,
    dilate_mask,
    masked_input,
    to_uint8,
    window_schedule,
)

CPU = torch.device("cpu")


def test_window_schedule_of_23_frames():
    windows = window_schedule(23, neighbor_stride=5, ref_length=10)
    assert [w.neighbors for w in windows] == [
        tuple(range(0, 6)),
        tuple(range(0, 11)),
        tuple(range(5, 16)),
        tuple(range(10, 21)),
        tuple(range(15, 23)),
    ]
    assert [w.refs for w in windows] == [(10, 20), (20,), (0, 20), (0,), (0, 10)]
    assert windows[2].frames == [*range(5, 16), 0, 20]


def test_every_frame_is_covered_and_interior_multiples_of_5_thrice():
    windows = window_schedule(60, 5, 10)
    hits = np.zeros(60, int)
    for w in windows:
        hits[list(w.neighbors)] += 1
    assert hits.min() >= 1
    interior = [i for i in range(5, 55) if i % 5 == 0]
    assert all(hits[i] == 3 for i in interior)
    assert all(hits[i] == 2 for i in range(5, 55) if i % 5)


def test_dilation_is_a_cross_grown_four_times():
    mask = np.zeros((21, 21), np.uint8)
    mask[10, 10] = 1
    grown = dilate_mask(mask, 4)
    yy, xx = np.mgrid[:21, :21]
    assert np.array_equal(grown.astype(bool), (abs(yy - 10) + abs(xx - 10)) <= 4)
    assert grown.sum() == 41
    assert np.array_equal(dilate_mask(mask * 255, 0), mask)


def test_dilation_matches_scipy_on_a_random_mask():
    mask = np.random.default_rng(0).random((40, 50)) > 0.97
    cross = generate_binary_structure(2, 1)
    expected = binary_dilation(mask, cross, iterations=3)
    assert np.array_equal(dilate_mask(mask.astype(np.uint8) * 255, 3).astype(bool), expected)


def test_model_input_and_uint8_truncation():
    frames = np.array([[[[0, 255, 51]]]], np.uint8)  # (1, 1, 1, 3)
    x = masked_input(frames, np.zeros((1, 1, 1), np.uint8))
    assert x.flatten().tolist() == pytest.approx([-1.0, 1.0, 51 / 255 * 2 - 1])
    assert masked_input(frames, np.ones((1, 1, 1), np.uint8)).abs().sum() == 0
    # (p + 1) / 2 * 255 = 127.5 -> 127 and 254.9 -> 254: truncation, not rounding
    pred = torch.tensor([0.0, 254.9 / 255 * 2 - 1, 1.0]).reshape(1, 3, 1, 1)
    assert to_uint8(pred).flatten().tolist() == [127, 254, 255]


def test_composite_takes_the_prediction_only_in_the_hole():
    gt = np.full((2, 2, 3), 10, np.uint8)
    pred = np.full((2, 2, 3), 200, np.uint8)
    mask = np.array([[1, 0], [0, 1]], np.uint8)
    out = composite(pred, gt, mask)
    assert out[..., 0].tolist() == [[200, 10], [10, 200]]


class PerCallConstant:
    """Returns a constant for every frame; the constant changes with each call."""

    def __init__(self, levels: list[int]):
        # chosen so that (c + 1) / 2 * 255 = level + 0.4, truncating to level
        self.values = [(v + 0.4) / 255 * 2 - 1 for v in levels]
        self.calls: list[tuple[int, int]] = []

    def __call__(self, x: torch.Tensor, num_local: int) -> torch.Tensor:
        b, t = x.shape[:2]
        self.calls.append((t, num_local))
        return torch.full((b * t, *x.shape[2:]), self.values[len(self.calls) - 1])


def _run(model, frames, masks, **kwargs) -> np.ndarray:
    out = dict(complete_video(model, frames, masks, device=CPU, **kwargs))
    assert list(out) == list(range(len(frames)))
    return np.stack([out[i] for i in range(len(frames))])


def test_window_averaging_weights_are_sequential_halves():
    length, levels = 23, [40, 100, 140, 200, 60]
    frames = np.zeros((length, 4, 5, 3), np.uint8)
    masks = np.ones((length, 4, 5), np.uint8)
    model = PerCallConstant(levels)
    out = _run(model, frames, masks, neighbor_stride=5, ref_length=10)
    schedule = window_schedule(length, 5, 10)
    assert model.calls == [(len(w.frames), len(w.neighbors)) for w in schedule]
    # frame 10 is in windows 1, 2, 3: weights 0.25, 0.25, 0.5
    assert out[10, 0, 0, 0] == pytest.approx(0.25 * 100 + 0.25 * 140 + 0.5 * 200)
    assert out[0, 0, 0, 0] == pytest.approx(0.5 * 40 + 0.5 * 100)
    assert out[22, 0, 0, 0] == 60  # only the last window holds frames 21 and 22
    for i in range(length):  # independent restatement: windows f with |f - i| <= 5, in order
        expected = None
        for k, f in enumerate(range(0, length, 5)):
            if abs(f - i) <= 5:
                v = np.float32(levels[k])
                expected = (
                    v if expected is None else expected * np.float32(0.5) + v * np.float32(0.5)
                )
        assert out[i, 0, 0, 0] == expected


def test_identity_model_keeps_ground_truth_outside_the_hole():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (12, 6, 7, 3), dtype=np.uint8)
    masks = (rng.random((12, 6, 7)) > 0.7).astype(np.uint8)
    out = _run(lambda x, n: x.flatten(0, 1), frames, masks, neighbor_stride=5, ref_length=10)
    hole = masks.astype(bool)
    assert np.array_equal(out[~hole], frames[~hole].astype(np.float32))
    assert np.all(out[hole] == 127)  # the zeroed hole, (0 + 1) / 2 * 255 = 127.5 -> 127


def test_batched_windows_equal_the_sequential_loop():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (27, 5, 6, 3), dtype=np.uint8)
    masks = (rng.random((27, 5, 6)) > 0.5).astype(np.uint8)

    def model(x, n):  # batch-invariant and frame-dependent
        return torch.tanh(x.flip(1) * 0.7 + 0.1).flatten(0, 1)

    one = _run(model, frames, masks, neighbor_stride=5, ref_length=10)
    many = _run(model, frames, masks, neighbor_stride=5, ref_length=10, window_batch=4)
    assert np.array_equal(one, many)


def test_frames_are_released_as_soon_as_final():
    frames = np.zeros((30, 2, 2, 3), np.uint8)
    masks = np.ones((30, 2, 2), np.uint8)
    windows_done = []
    released = []
    gen = complete_video(
        lambda x, n: torch.zeros(x.shape[0] * x.shape[1], *x.shape[2:]),
        frames,
        masks,
        neighbor_stride=5,
        ref_length=10,
        device=CPU,
        on_window=lambda: windows_done.append(len(windows_done)),
    )
    for idx, _ in gen:
        released.append((idx, len(windows_done)))
    # frame i is released right after the last window holding it (largest f <= i + 5)
    assert released[0] == (0, 2) and released[4] == (4, 2) and released[5] == (5, 3)
    assert released[-1] == (29, 6)
