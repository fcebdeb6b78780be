"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
k(x, y) = (x.y / d + 1)^3, averaged over random subsets of m real and m fake features:

    MMD^2 = sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (m(m-1)) - 2 sum_{i,j} k(x_i, y_j) / m^2

It is unbiased, so it can be negative when the two sets are close.
"""

from __future__ import annotations

import numpy as np

from evaluation.checks import as_features, same_width


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between two equal-size subsets (the per-subset estimator above)."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    off = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(off - 2.0 * k_xy.sum() / (m * m))


def kid(real, fake, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of MMD^2 over `subsets` draws of min(subset_size, N_real, N_fake) samples a side."""
    x, y = as_features(real, "real"), as_features(fake, "fake")
    same_width(x, y)
    m = min(subset_size, len(x), len(y))
    rng = np.random.default_rng(seed)
    values = [
        polynomial_mmd2(x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))
