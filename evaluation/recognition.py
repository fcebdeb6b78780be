"""Scores read off a classifier of the dataset's own classes (the domain classifier), per sample:

- recognisable: the share of samples whose top class probability is at least `threshold` (max softmax >= 0.9
  by default), i.e. that the classifier confidently reads as *some* class. A collapsed or noisy generator
  scores near 0 even when its few modes look fine; real held-out digits score near 1.
- worst-label accuracy: for samples generated for given labels, the accuracy of the label the model renders
  worst, min_c P(predicted = c | asked for c). Mean accuracy hides a model that never draws one class.

Both only mean something when the classifier's classes are the dataset's labels (not ImageNet's).
"""

from __future__ import annotations

import numpy as np

from evaluation.checks import MetricInputError, as_features


def recognisable(probs, threshold: float = 0.9) -> float:
    """Share of rows of `probs` (N, classes) whose largest probability is >= threshold."""
    p = as_features(probs, "probs", min_samples=1)
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise MetricInputError("probs: rows must be probability distributions (non-negative, summing to 1)")
    if not 0.0 < threshold <= 1.0:
        raise MetricInputError(f"threshold: must be in (0, 1], got {threshold}")
    return float((p.max(axis=1) >= threshold).mean())


def per_label_accuracy(predicted, labels) -> dict[int, float]:
    """{label: share of the samples asked for `label` that the classifier predicts as `label`}, per label present."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    if predicted.shape != labels.shape or predicted.ndim != 1:
        raise MetricInputError(f"predicted {predicted.shape} and labels {labels.shape}: expected two equal 1-D arrays")
    return {int(c): float((predicted[labels == c] == c).mean()) for c in np.unique(labels)}


def worst_label_accuracy(predicted, labels) -> float:
    """min over the labels present of their accuracy (see `per_label_accuracy`)."""
    accuracy = per_label_accuracy(predicted, labels)
    if not accuracy:
        raise MetricInputError("labels: empty")
    return min(accuracy.values())
