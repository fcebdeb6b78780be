"""k-NN manifold metrics of real and fake features.

Improved precision and recall (Kynkäänniemi et al. 2019), k = 3: the real manifold is the union of
balls around each real sample with radius its distance to its k-th nearest real neighbour; precision
is the share of fakes inside it, recall the share of reals inside the fake manifold.
Density and coverage (Naeem et al. 2020), k = 5, real balls only:
density = 1/(kM) sum_j sum_i 1[f_j in B(r_i)], coverage = 1/N sum_i 1[exists j: f_j in B(r_i)].
"""

from __future__ import annotations

import numpy as np

from evaluation.checks import as_features, same_width

_CHUNK = 2048  # rows per block of the distance matrix: bounds memory at N x 2048 float64


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def pairwise_distances(a: np.ndarray, b: np.ndarray, chunk: int = _CHUNK):
    """Yield (row offset, Euclidean distance block) via ||a||^2 + ||b||^2 - 2 a.b (BLAS)."""
    nb = _sq_norms(b)
    for start in range(0, len(a), chunk):
        block = a[start : start + chunk]
        d2 = _sq_norms(block)[:, None] + nb[None, :] - 2.0 * block @ b.T
        yield start, np.sqrt(np.clip(d2, 0.0, None))


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row of x to its k-th nearest other row."""
    if k >= len(x):
        raise ValueError(f"k={k} needs more than {k} samples, got {len(x)}")
    radii = np.empty(len(x))
    for start, dist in pairwise_distances(x, x):
        # Column k of the sorted row: column 0 is the point itself at distance 0.
        radii[start : start + len(dist)] = np.partition(dist, k, axis=1)[:, k]
    return radii


def _ball_counts(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per point: how many centre balls contain it; per centre: whether any point falls in its ball."""
    counts = np.zeros(len(points), dtype=np.int64)
    covered = np.zeros(len(centres), dtype=bool)
    for start, dist in pairwise_distances(points, centres):
        inside = dist <= radii[None, :]
        counts[start : start + len(dist)] = inside.sum(axis=1)
        covered |= inside.any(axis=0)
    return counts, covered


def precision_recall(real, fake, *, k: int = 3) -> tuple[float, float]:
    x, y = as_features(real, "real", k + 1), as_features(fake, "fake", k + 1)
    same_width(x, y)
    in_real, _ = _ball_counts(y, x, knn_radii(x, k))
    in_fake, _ = _ball_counts(x, y, knn_radii(y, k))
    return float((in_real > 0).mean()), float((in_fake > 0).mean())


def density_coverage(real, fake, *, k: int = 5) -> tuple[float, float]:
    x, y = as_features(real, "real", k + 1), as_features(fake, "fake", 1)
    same_width(x, y)
    counts, covered = _ball_counts(y, x, knn_radii(x, k))
    return float(counts.sum() / (k * len(y))), float(covered.mean())
