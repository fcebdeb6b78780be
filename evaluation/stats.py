"""Gaussian statistics of features, with the covariance factor cached for the Fréchet distance."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg

from evaluation.checks import as_features


@dataclass
class FeatureStats:
    """Mean, covariance (N-1 normalisation, float64) and sample count of a feature set.

    `factor()` returns L with cov = L L^T (Cholesky, or the symmetric square root from `eigh` when
    the covariance is singular); it is computed once and reused, so a cached reference set pays for
    it only when the cache is built.
    """

    mean: np.ndarray
    cov: np.ndarray
    n: int
    _factor: np.ndarray | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def factor(self) -> np.ndarray:
        if self._factor is None:
            self._factor = covariance_factor(self.cov)
        return self._factor

    def to_dict(self) -> dict[str, np.ndarray]:
        out = {"mean": self.mean, "cov": self.cov, "n": np.array(self.n)}
        if self._factor is not None:
            out["factor"] = self._factor
        return out

    @classmethod
    def from_dict(cls, d: dict[str, np.ndarray]) -> "FeatureStats":
        return cls(np.asarray(d["mean"]), np.asarray(d["cov"]), int(d["n"]), d.get("factor"))


def feature_stats(features, name: str = "features") -> FeatureStats:
    x = as_features(features, name)
    n, d = x.shape
    if n <= d:
        warnings.warn(
            f"{name}: {n} samples for {d} dimensions: the covariance is singular (rank <= {n - 1}); "
            "the Fréchet distance is still exact for these statistics but biased high",
            stacklevel=2,
        )
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / (n - 1)
    return FeatureStats(mean, cov, n)


def covariance_factor(cov: np.ndarray) -> np.ndarray:
    """L with cov = L L^T: Cholesky when positive definite, else the PSD square root via eigh."""
    try:
        return scipy.linalg.cholesky(cov, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        w, v = scipy.linalg.eigh(cov, check_finite=False)
        return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
