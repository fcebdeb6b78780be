"""Input checks shared by the metrics: 2-D, finite, float64, matching widths, enough samples."""

from __future__ import annotations

import numpy as np


class MetricInputError(ValueError):
    pass


def as_features(x, name: str, min_samples: int = 2) -> np.ndarray:
    """(N, d) float64 array, or MetricInputError naming the argument and the problem."""
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if arr.ndim != 2:
        raise MetricInputError(f"{name}: expected an (N, d) array of features, got shape {arr.shape}")
    if arr.shape[0] < min_samples:
        raise MetricInputError(f"{name}: needs at least {min_samples} samples, got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise MetricInputError(f"{name}: {bad} rows contain NaN or inf")
    return arr


def same_width(a: np.ndarray, b: np.ndarray, names: tuple[str, str] = ("real", "fake")) -> None:
    if a.shape[1] != b.shape[1]:
        raise MetricInputError(f"feature dimensions differ: {names[0]} has {a.shape[1]}, {names[1]} has {b.shape[1]}")


def as_images(x, name: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if arr.ndim != 4:
        raise MetricInputError(f"{name}: expected images (N, C, H, W), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise MetricInputError(f"{name}: contains NaN or inf")
    return arr
