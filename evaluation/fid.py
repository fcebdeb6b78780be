"""Fréchet distance between Gaussians fitted to features (Heusel et al. 2017, "FID").

    FD = ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2))

Tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2, which are those of
the symmetric PSD matrix L^T S2 L for any factor S1 = L L^T. So one symmetric eigenvalue problem
(`eigvalsh`) replaces the general matrix square root (`sqrtm`): exact, faster, and free of the
complex round-off `sqrtm` produces.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from evaluation.checks import MetricInputError
from evaluation.stats import FeatureStats, feature_stats


def _stats(x, name: str) -> FeatureStats:
    return x if isinstance(x, FeatureStats) else feature_stats(x, name)


def trace_sqrt_product(s1: FeatureStats, cov2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) via the eigenvalues of L^T S2 L, with S1 = L L^T cached on s1."""
    L = s1.factor()
    m = L.T @ cov2 @ L
    eig = scipy.linalg.eigvalsh((m + m.T) * 0.5, check_finite=False, driver="evd")
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance(real, fake) -> float:
    """Each argument an (N, d) array of features or a FeatureStats; float64 throughout."""
    s1, s2 = _stats(real, "real"), _stats(fake, "fake")
    if s1.dim != s2.dim:
        raise MetricInputError(f"feature dimensions differ: real has {s1.dim}, fake has {s2.dim}")
    diff = s1.mean - s2.mean
    value = float(diff @ diff + np.trace(s1.cov) + np.trace(s2.cov) - 2.0 * trace_sqrt_product(s1, s2.cov))
    return max(value, 0.0)
