"""Fréchet distance (Heusel et al. 2017) at d = 2048: genforge against the `scipy.linalg.sqrtm` formulation.

    FD = ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2))

The reference is what pytorch-fid and most FID code do: `sqrtm(S1 @ S2)` (a general, complex Schur-based matrix
square root), its real part's trace. genforge takes the eigenvalues of the symmetric L^T S2 L with S1 = L L^T
(evaluation/fid.py). Two like-for-like comparisons, each interleaved per repeat:

- from features: both sides compute both sets' statistics, then the distance;
- with cached reference statistics: both sides hold the real set's mean and covariance (genforge also its
  factor L, which its cache stores), and pay for the fake set's statistics and the distance.

Agreement is the largest |FD_genforge - FD_sqrtm| / |FD_sqrtm| over every repeat of both comparisons.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from benchmarks.report import Entry
from benchmarks.timing import Stats, interleaved, paired_ratio
from evaluation import feature_stats, frechet_distance

FAMILY = "frechet"


def sqrtm_fid(mu1: np.ndarray, s1: np.ndarray, fake: np.ndarray) -> float:
    """The reference formulation: the fake set's statistics, then the trace of sqrtm(S1 S2)."""
    mu2, s2 = fake.mean(0), np.cov(fake, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def features(dim: int, samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Correlated, non-negative features (like a CNN's pooled activations), the fake set slightly shifted."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    real = np.abs(rng.normal(size=(samples, dim)) @ mix)
    fake = np.abs(rng.normal(0.05, 1.1, size=(samples, dim)) @ mix)
    return real, fake


def run(dim: int = 2048, samples: int = 4096, repeats: int = 3) -> list[Entry]:
    """Time the four variants `repeats` times, interleaved; entries for both speed-ups and the agreement."""
    real, fake = features(dim, samples)
    cached = feature_stats(real)
    cached.factor()  # what genforge's reference cache stores beside the mean and covariance
    fns = {
        "sqrtm_fresh": lambda: sqrtm_fid(real.mean(0), np.cov(real, rowvar=False), fake),
        "genforge_fresh": lambda: frechet_distance(real, fake),
        "sqrtm_cached": lambda: sqrtm_fid(cached.mean, cached.cov, fake),
        "genforge_cached": lambda: frechet_distance(cached, fake),
    }
    seconds, values = _timed_with_values(fns, repeats)
    fresh = paired_ratio(seconds["sqrtm_fresh"], seconds["genforge_fresh"])
    cache = paired_ratio(seconds["sqrtm_cached"], seconds["genforge_cached"])
    vs_fresh = paired_ratio(seconds["sqrtm_fresh"], seconds["genforge_cached"])
    rel = [abs(g - r) / abs(r) for g, r in zip(values["genforge_fresh"] + values["genforge_cached"],
                                               values["sqrtm_fresh"] + values["sqrtm_cached"])]
    shape = f"d={dim}, N={samples} a side"
    entries = [
        _ratio("frechet_speedup_from_features", fresh, ">= 5", f"sqrtm / genforge, both from features; {shape}"),
        _ratio("frechet_speedup_cached_stats", cache, ">= 10",
               f"sqrtm / genforge, both with the real statistics cached; {shape}"),
        _ratio("frechet_speedup_cached_vs_sqrtm_from_features", vs_fresh, None,
               "genforge with cached statistics against sqrtm from features"),
        Entry("frechet_max_rel_difference", max(rel), "relative", "<= 1e-9", family=FAMILY, repeats=len(rel),
              note=f"max |FD - FD_sqrtm| / FD_sqrtm over all repeats; FD = {values['sqrtm_fresh'][-1]:.6g}"),
    ]
    for name, label in (("sqrtm_fresh", "sqrtm from features"), ("genforge_fresh", "genforge from features"),
                        ("sqrtm_cached", "sqrtm, cached statistics"), ("genforge_cached", "genforge, cached")):
        s = Stats.of(seconds[name])
        entries.append(Entry(f"frechet_time_{name}", s.median, "s", family=FAMILY, spread=s.spread(),
                             repeats=s.n, note=f"{label}; {shape}"))
    return entries


def _timed_with_values(fns: dict, repeats: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """interleaved() keeps only the last result; the agreement wants every repeat's value."""
    values: dict[str, list[float]] = {k: [] for k in fns}

    def recording(name, fn):
        def call():
            v = fn()
            values[name].append(v)
            return v

        return call

    seconds, _ = interleaved({k: recording(k, f) for k, f in fns.items()}, repeats)
    return seconds, values


def _ratio(name: str, s: Stats, target: str | None, note: str) -> Entry:
    return Entry(name, s.median, "x", target, family=FAMILY, spread=s.spread(), repeats=s.n, note=note)
