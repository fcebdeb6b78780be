"""Fréchet distance at d=2048 with 4,096 samples a side: genforge's symmetric factorisation against the
textbook `scipy.linalg.sqrtm(S1 @ S2)` formulation, timed in the same process.

    python benchmarks/fid_speed.py [--dim 2048] [--samples 4096] [--repeats 3]

Prints each time (best of --repeats), the two speed-up ratios and the relative disagreement.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.linalg

from evaluation import feature_stats, frechet_distance


def sqrtm_fid(mu1, s1, b: np.ndarray) -> float:
    """The reference: fake statistics, then the general matrix square root of S1 S2."""
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


def best_of(fn, repeats: int) -> tuple[float, float]:
    times, value = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return min(times), value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(args.dim, args.dim)) / np.sqrt(args.dim)  # correlated features, like a CNN's
    real = np.abs(rng.normal(size=(args.samples, args.dim)) @ mix)
    fake = np.abs(rng.normal(0.05, 1.1, size=(args.samples, args.dim)) @ mix)

    t_ref, ref = best_of(lambda: sqrtm_fid(real.mean(0), np.cov(real, rowvar=False), fake), args.repeats)
    t_ours, ours = best_of(lambda: frechet_distance(real, fake), args.repeats)
    cached = feature_stats(real)
    cached.factor()  # what the reference-statistics cache stores
    mu1, s1 = cached.mean, cached.cov
    t_ref_cached, ref_cached = best_of(lambda: sqrtm_fid(mu1, s1, fake), args.repeats)
    t_cached, ours_cached = best_of(lambda: frechet_distance(cached, fake), args.repeats)

    print(f"d={args.dim} N={args.samples} (best of {args.repeats})")
    print(f"  sqrtm, from features           {t_ref:8.3f} s   FD={ref:.10f}")
    print(f"  genforge, from features        {t_ours:8.3f} s   FD={ours:.10f}   {t_ref / t_ours:5.1f}x")
    print(f"  sqrtm, real statistics cached  {t_ref_cached:8.3f} s")
    print(f"  genforge, real stats cached    {t_cached:8.3f} s   FD={ours_cached:.10f}   "
          f"{t_ref / t_cached:5.1f}x vs sqrtm from features, {t_ref_cached / t_cached:5.1f}x vs sqrtm cached")
    print(
        f"  relative difference to sqrtm: {abs(ours - ref) / abs(ref):.2e} (fresh), "
        f"{abs(ours_cached - ref) / abs(ref):.2e} (cached)"
    )


if __name__ == "__main__":
    main()
