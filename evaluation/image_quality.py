"""Pixel-space reconstruction metrics over image batches (N, C, H, W), averaged over the batch.

SSIM follows Wang et al. 2004 with the usual settings (Gaussian window sigma 1.5 truncated at 3.5
sigma, i.e. 11x11; K1 = 0.01, K2 = 0.03; population statistics), computed per channel and averaged
over the valid region, the way scikit-image's `structural_similarity(gaussian_weights=True,
use_sample_covariance=False)` does. Images smaller than the window use the largest odd window that
fits (scikit-image refuses them), which keeps 8x8 digits measurable.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from evaluation.checks import MetricInputError, as_images


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_images(x, "x"), as_images(y, "y")
    if a.shape != b.shape:
        raise MetricInputError(f"x and y differ in shape: {a.shape} vs {b.shape}")
    return a, b


def mse(x, y) -> float:
    a, b = _pair(x, y)
    return float(((a - b) ** 2).mean())


def psnr(x, y, *, data_range: float = 1.0) -> float:
    """Mean over images of 10 log10(range^2 / MSE_image); identical images give inf."""
    a, b = _pair(x, y)
    err = ((a - b) ** 2).reshape(len(a), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return float(np.mean(10.0 * np.log10(data_range**2 / err)))


def bce(x, y, *, eps: float = 1e-7) -> float:
    """Binary cross-entropy of targets x in [0, 1] under Bernoulli means y, summed per image (nats)."""
    a, b = _pair(x, y)
    b = np.clip(b, eps, 1 - eps)
    return float(-(a * np.log(b) + (1 - a) * np.log(1 - b)).reshape(len(a), -1).sum(axis=1).mean())


def ssim(x, y, *, data_range: float = 1.0, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> float:
    a, b = _pair(x, y)
    side = min(a.shape[2], a.shape[3])
    truncate = 3.5
    radius = int(truncate * sigma + 0.5)
    if 2 * radius + 1 > side:  # shrink the window to fit small images
        radius = (side - 1) // 2
        truncate = radius / sigma
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2

    def blur(img: np.ndarray) -> np.ndarray:
        return gaussian_filter(img, sigma=(0, 0, sigma, sigma), truncate=truncate, mode="reflect")

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    valid = s[:, :, radius : s.shape[2] - radius, radius : s.shape[3] - radius]
    return float(valid.reshape(len(a), -1).mean(axis=1).mean())
