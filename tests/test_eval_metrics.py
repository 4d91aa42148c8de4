"""PSNR / SSIM / Fréchet distance against known values and against scikit-image directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import uniform_filter
from skimage.metrics import structural_similarity

from e2fgvi.eval import metrics


def test_psnr_of_a_known_mse():
    gt = np.zeros((4, 6, 3), np.uint8)
    comp = np.full((4, 6, 3), 5.0, np.float32)  # MSE = 25
    assert metrics.psnr(gt, comp) == pytest.approx(20 * math.log10(255 / 5), abs=1e-12)
    comp = comp.astype(np.float64)
    comp[0, 0, 0] = math.sqrt(36 * 72 - 71 * 25)  # 71 errors of 25 and one of 817: MSE = 36
    assert metrics.psnr(gt, comp) == pytest.approx(20 * math.log10(255 / 6), abs=1e-9)


def test_psnr_identical_is_infinite_and_uint8_does_not_wrap():
    gt = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert metrics.psnr(gt, gt.astype(np.float32)) == math.inf
    # uint8 - uint8 would wrap around; the float64 difference must not
    low, high = np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 255, np.uint8)
    assert metrics.psnr(low, high) == pytest.approx(0.0, abs=1e-12)


def test_ssim_identical_is_one():
    gt = np.random.default_rng(1).integers(0, 256, (80, 90, 3), dtype=np.uint8)
    assert metrics.ssim(gt, gt.astype(np.float32), 65) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_scikit_image_called_directly():
    rng = np.random.default_rng(2)
    gt = rng.integers(0, 256, (70, 100, 3), dtype=np.uint8)
    comp = np.clip(gt + rng.normal(0, 20, gt.shape), 0, 255).astype(np.float32)
    direct = structural_similarity(
        gt.astype(np.float64), comp.astype(np.float64), win_size=65, data_range=255, channel_axis=2
    )
    assert metrics.ssim(gt, comp, 65) == pytest.approx(direct, abs=1e-12)
    assert 0.0 < metrics.ssim(gt, comp, 65) < 0.99


def _ssim_by_hand(a: np.ndarray, b: np.ndarray, win: int) -> float:
    """Wang et al. SSIM with a uniform window, sample covariance and the border cropped."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2, n = (0.01 * 255) ** 2, (0.03 * 255) ** 2, win * win
    values = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch], b[..., ch]
        mx, my = uniform_filter(x, win), uniform_filter(y, win)
        vx = (uniform_filter(x * x, win) - mx * mx) * n / (n - 1)
        vy = (uniform_filter(y * y, win) - my * my) * n / (n - 1)
        cxy = (uniform_filter(x * y, win) - mx * my) * n / (n - 1)
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        pad = (win - 1) // 2
        values.append(s[pad:-pad, pad:-pad].mean())
    return float(np.mean(values))


def test_ssim_matches_the_formula_written_out():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    comp = np.clip(gt * 0.7 + rng.normal(40, 15, gt.shape), 0, 255)
    assert metrics.ssim(gt, comp, 7) == pytest.approx(_ssim_by_hand(gt, comp, 7), abs=1e-9)


def test_frechet_distance_by_hand():
    # 1-D: (0 - 3)^2 + 1 + 4 - 2*sqrt(1*4) = 10
    assert metrics.frechet_distance(
        np.array([0.0]), np.array([[1.0]]), np.array([3.0]), np.array([[4.0]])
    ) == pytest.approx(10.0, abs=1e-9)
    # diagonal 2-D: sum of (mean diff)^2 + sum (sqrt(s1) - sqrt(s2))^2 = (1 + 4) + (1 + 1) = 7
    d = metrics.frechet_distance(
        np.array([1.0, 0.0]), np.diag([1.0, 9.0]), np.array([0.0, 2.0]), np.diag([4.0, 4.0])
    )
    assert d == pytest.approx(7.0, abs=1e-9)


def test_vfid_of_shifted_and_scaled_activations():
    real = np.array([[0.0, 1.0], [2.0, 0.0], [1.0, 3.0], [3.0, 2.0]])
    shift = np.array([0.5, -2.0])
    # same covariance: only the mean term is left
    assert metrics.vfid(real, real + shift) == pytest.approx(shift @ shift, abs=1e-9)
    # fake = 2 * real: cov 4S, sqrt(S * 4S) = 2S, so d = |mu|^2 + Tr(S + 4S - 4S) = |mu|^2 + Tr(S)
    mu, cov = real.mean(axis=0), np.cov(real, rowvar=False)
    expected = mu @ mu + np.trace(cov)
    assert metrics.vfid(real, 2 * real) == pytest.approx(expected, abs=1e-9)


def test_vfid_needs_two_videos():
    with pytest.raises(ValueError, match="at least 2 videos"):
        metrics.vfid(np.ones((1, 4)), np.ones((1, 4)))
