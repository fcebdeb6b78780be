"""Inception score (Salimans et al. 2016) over class probabilities: exp(E_x KL(p(y|x) || p(y))),
mean and standard deviation over `splits` consecutive splits (the reference protocol uses 10).
With the domain classifier's softmax instead of Inception's, it is the "IS analogue"."""

from __future__ import annotations

import numpy as np

from evaluation.checks import MetricInputError, as_features


def inception_score(probs, *, splits: int = 10) -> tuple[float, float]:
    p = as_features(probs, "probs", min_samples=splits)
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise MetricInputError("probs: rows must be probability distributions (non-negative, summing to 1)")
    scores = []
    for part in np.array_split(p, splits):
        marginal = part.mean(axis=0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0.0).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
