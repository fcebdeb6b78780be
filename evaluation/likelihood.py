"""Likelihoods of image data and the bounds built from them, as pure functions over arrays.

A likelihood is only a likelihood of data it is a distribution over, so each decoder comes with the discretisation
of the data it scores:

- Bernoulli (cross-entropy): binary pixels. Grey levels are binarised, x_b ~ Bernoulli(x), as for binarised MNIST
  (Salakhutdinov & Murray 2008); held-out images are binarised once with a fixed seed (`binarise`) so every model
  is scored on the same bits. log p(x_b) = sum x_b l - softplus(l) over pixels, for decoder logits l.
- Gaussian and Laplace: 8-bit pixels k / 255, k = 0..255. The continuous density is integrated over each pixel's
  bin [k - 1/2, k + 1/2] / 255, with the end bins stretched to -inf and +inf (the discretised likelihood of
  Salimans et al. 2017, PixelCNN++, and Kingma et al. 2016, IAF): a probability mass, so the NLL is >= 0 nats
  and bits per dimension are >= 0. (A density on 8-bit data without dequantisation is not: it grows without bound
  as the scale shrinks.) Data that is not 8-bit is first rounded to the 8-bit grid (`quantise_8bit`), as saving it
  as an 8-bit image would.

Importance-weighted bound (Burda et al. 2016): with k samples z_i ~ q(z|x) and
log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x),  NLL_k(x) = -(logsumexp_i log w_i - log k).
It tightens towards -log p(x) as k grows; k = 1 gives the negative ELBO in expectation.
Bits per dimension = nats / (D ln 2) for D = C*H*W.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import log_ndtr, logsumexp

from evaluation.checks import MetricInputError

LEVELS = 256  # 8-bit pixels
CONTINUOUS = ("gaussian", "laplace")
MID_BIN = -1e-10  # log-ratio of a bin's CDF values above which its mass is taken as density x width


def iw_nll(log_weights) -> np.ndarray:
    """Per-example importance-weighted NLL in nats from an (N, k) array of log-weights."""
    lw = np.asarray(log_weights, dtype=np.float64)
    if lw.ndim != 2 or lw.shape[1] < 1:
        raise MetricInputError(f"log_weights: expected (N, k), got shape {lw.shape}")
    return -(logsumexp(lw, axis=1) - math.log(lw.shape[1]))


def bits_per_dim(nats, dims: int):
    return np.asarray(nats, dtype=np.float64) / (dims * math.log(2.0))


def _unit(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(a)) or a.min(initial=0.0) < 0.0 or a.max(initial=0.0) > 1.0:
        raise MetricInputError(f"{name}: expected finite values in [0, 1]")
    return a


def binarise(x, seed: int, first_row: int = 0) -> np.ndarray:
    """One fixed Bernoulli(x) draw of images x (N, ...) in [0, 1], as float64 0/1: pixel j of image r is 1 where
    u_j < x_j, u ~ U(0, 1) from numpy's default_rng([seed, first_row + r]). Each image's bits depend only on the
    seed and its row in the split, so a split binarised in batches (first_row = the batch's first row) gets the
    same bits as binarised whole."""
    a = _unit(x, "x")
    if a.ndim < 1:
        raise MetricInputError("x: expected images (N, ...)")
    u = np.stack([np.random.default_rng([seed, first_row + r]).random(a.shape[1:]) for r in range(len(a))]) \
        if len(a) else np.empty(a.shape)
    return (u < a).astype(np.float64)


def quantise_8bit(x) -> np.ndarray:
    """x in [0, 1] rounded to the 8-bit grid k / 255 (exact for 8-bit data)."""
    return np.round(_unit(x, "x") * (LEVELS - 1)) / (LEVELS - 1)


def bernoulli_log_prob(x, logits) -> np.ndarray:
    """log p(x) of binary x under Bernoulli(sigmoid(logits)), per element: x l - softplus(l)."""
    a, lg = np.asarray(x, dtype=np.float64), np.asarray(logits, dtype=np.float64)
    if a.shape != lg.shape:
        raise MetricInputError(f"x and logits differ in shape: {a.shape} vs {lg.shape}")
    if not np.all((a == 0.0) | (a == 1.0)):
        raise MetricInputError("x: a Bernoulli likelihood scores binary data (binarise it first)")
    return a * lg - np.logaddexp(0.0, lg)


def _log_cdf(t: np.ndarray, kind: str) -> np.ndarray:
    """log F(t) of the standard distribution (Gaussian: Phi; Laplace: F(t) = e^t / 2 below 0, 1 - e^-t / 2 above)."""
    if kind == "gaussian":
        return log_ndtr(t)
    with np.errstate(over="ignore"):
        return np.where(t < 0, np.minimum(t, 0.0) - math.log(2.0), np.log1p(-0.5 * np.exp(-np.maximum(t, 0.0))))


def _log1mexp(d: np.ndarray) -> np.ndarray:
    """log(1 - e^d) for d < 0 (Maechler 2012: expm1 near 0, log1p further out)."""
    with np.errstate(divide="ignore"):
        return np.where(d > -math.log(2.0), np.log(-np.expm1(d)), np.log1p(-np.exp(d)))


def discretised_log_prob(x, mean, scale, kind: str) -> np.ndarray:
    """log P(x) per element of 8-bit data x = k / 255 under a Gaussian (scale = sigma) or Laplace (scale = b)
    with `mean` in [0, 1] units, integrated over the pixel's bin, the end bins open to -inf / +inf.

    The bin mass F(u) - F(l) is taken on the side of the smaller tail (1 - F mirrored for a bin above the mean),
    in logs, so it stays accurate where both CDF values are close to 0 or to 1.
    """
    if kind not in CONTINUOUS:
        raise MetricInputError(f"kind: expected one of {', '.join(CONTINUOUS)}, got {kind!r}")
    a = np.asarray(x, dtype=np.float64)
    k = np.round(a * (LEVELS - 1))
    if a.min(initial=0.0) < 0.0 or a.max(initial=0.0) > 1.0 or np.abs(k - a * (LEVELS - 1)).max(initial=0.0) > 1e-3:
        raise MetricInputError("x: a discretised likelihood scores 8-bit data k / 255 (quantise it first)")
    mu, s = np.broadcast_arrays(np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64))
    if np.any(s <= 0):
        raise MetricInputError("scale: must be > 0")
    half = 0.5 / (LEVELS - 1)
    lo, hi = (k / (LEVELS - 1) - half - mu) / s, (k / (LEVELS - 1) + half - mu) / s
    mid = (k / (LEVELS - 1) - mu) / s
    below = mid < 0  # bin centre below the mean: the left tail's CDF is the accurate one
    log_f_hi, log_f_lo = _log_cdf(hi, kind), _log_cdf(lo, kind)
    log_s_lo, log_s_hi = _log_cdf(-lo, kind), _log_cdf(-hi, kind)
    d = np.where(below, log_f_lo - log_f_hi, log_s_hi - log_s_lo)
    inner = np.where(below, log_f_hi, log_s_lo) + _log1mexp(np.minimum(d, MID_BIN))
    # A bin so narrow against the scale that its CDF values agree to 1e-10: density x width is exact there.
    log_pdf = -0.5 * mid**2 - 0.5 * math.log(2 * math.pi) if kind == "gaussian" else -np.abs(mid) - math.log(2.0)
    inner = np.where(d > MID_BIN, log_pdf - np.log(s) - math.log(LEVELS - 1), inner)
    return np.where(k == 0, log_f_hi, np.where(k == LEVELS - 1, log_s_lo, inner))
