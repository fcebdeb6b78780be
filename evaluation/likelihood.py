"""Likelihood bounds for VAEs, as pure functions of per-sample log-weights.

Importance-weighted bound (Burda et al. 2016): with k samples z_i ~ q(z|x) and
log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x),  NLL_k(x) = -(logsumexp_i log w_i - log k).
It tightens towards -log p(x) as k grows; k = 1 gives the negative ELBO in expectation.
Bits per dimension = nats / (D ln 2) for D = C*H*W.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from evaluation.checks import MetricInputError


def iw_nll(log_weights) -> np.ndarray:
    """Per-example importance-weighted NLL in nats from an (N, k) array of log-weights."""
    lw = np.asarray(log_weights, dtype=np.float64)
    if lw.ndim != 2 or lw.shape[1] < 1:
        raise MetricInputError(f"log_weights: expected (N, k), got shape {lw.shape}")
    return -(logsumexp(lw, axis=1) - math.log(lw.shape[1]))


def bits_per_dim(nats, dims: int):
    return np.asarray(nats, dtype=np.float64) / (dims * math.log(2.0))
