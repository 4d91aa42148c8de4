"""Frame and video metrics of the E2FGVI evaluation protocol (docs/official-e2fgvi.md §5.1).

PSNR and SSIM compare the uint8 ground truth with the float composite, both cast to float64 as
the official ``calc_psnr_and_ssim`` does; VFID is the Fréchet distance between Gaussians fitted
to per-video I3D features.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy import linalg
from skimage.metrics import structural_similarity

log = logging.getLogger(__name__)


def psnr(gt: np.ndarray, comp: np.ndarray) -> float:
    """20·log10(255/√MSE) in float64 over the whole image; inf for identical images."""
    if gt.shape != comp.shape:
        raise ValueError(f"shape mismatch {gt.shape} vs {comp.shape}")
    mse = float(np.mean((gt.astype(np.float64) - comp.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 20.0 * math.log10(255.0 / math.sqrt(mse))


def ssim(gt: np.ndarray, comp: np.ndarray, window: int) -> float:
    """Mean SSIM of (H, W, 3) images: uniform ``window``, data range 255, per-channel mean."""
    return float(
        structural_similarity(
            gt.astype(np.float64),
            comp.astype(np.float64),
            win_size=window,
            data_range=255,
            channel_axis=2,
        )
    )


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """d² = |mu1 − mu2|² + Tr(S1 + S2 − 2·sqrt(S1·S2)) between two Gaussians.

    A singular product gets ``eps`` on both diagonals (as the official code does); a square root
    whose diagonal keeps an imaginary part above 1e-3 raises ValueError.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1 = np.atleast_2d(sigma1).astype(np.float64)
    sigma2 = np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("the two Gaussians have different dimensions")
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        log.warning("singular covariance product; adding %g to the diagonals", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def vfid(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance of (videos, features) activations: sample means, np.cov (ddof 1)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.shape != fake.shape or real.ndim != 2:
        raise ValueError(f"need two equal (videos, features) arrays: {real.shape}, {fake.shape}")
    if real.shape[0] < 2:
        raise ValueError("VFID needs at least 2 videos (a covariance of one sample is undefined)")
    return frechet_distance(
        real.mean(axis=0), np.cov(real, rowvar=False), fake.mean(axis=0), np.cov(fake, rowvar=False)
    )
