"""Sample diversity in feature space: mean pairwise distance (overall and per class) and mode coverage."""

from __future__ import annotations

import numpy as np

from evaluation.checks import as_features
from evaluation.prdc import pairwise_distances


def mean_pairwise_distance(features, *, max_samples: int = 5000, seed: int = 0) -> float:
    """Mean Euclidean distance over distinct pairs (a random subset above max_samples)."""
    x = as_features(features, "features")
    if len(x) > max_samples:
        x = x[np.random.default_rng(seed).choice(len(x), max_samples, replace=False)]
    total = sum(float(d.sum()) for _, d in pairwise_distances(x, x))
    return total / (len(x) * (len(x) - 1))


def per_class_pairwise_distance(features, labels, num_classes: int) -> dict[int, float]:
    x = as_features(features, "features", 1)
    labels = np.asarray(labels)
    return {c: mean_pairwise_distance(x[labels == c]) for c in range(num_classes) if (labels == c).sum() >= 2}


def class_coverage(predicted_labels, num_classes: int, *, min_share: float = 0.1) -> float:
    """Share of classes (modes) that receive at least min_share of their fair share of samples.

    With 10 classes and min_share 0.1, a class needs 1 % of the samples to count as covered; a
    collapsed generator covers 1/num_classes.
    """
    labels = np.asarray(predicted_labels)
    counts = np.bincount(labels, minlength=num_classes)[:num_classes]
    return float((counts >= min_share * len(labels) / num_classes).mean())
