"""Repeated timings and their summaries: median with quartiles, and paired ratios.

A ratio of two implementations is taken per repeat, from calls interleaved in round-robin order (A B A B ...),
so that a slow patch on a shared machine hits both sides of a pair; its median and spread are then those of
the per-repeat ratios.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Stats:
    """Median and spread of repeated measurements: quartiles (numpy's linear interpolation) and the range."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Stats":
        a = np.asarray(values, dtype=float)
        if a.size == 0:
            nan = float("nan")
            return cls(nan, nan, nan, nan, nan, 0)
        q1, med, q3 = np.percentile(a, [25, 50, 75])
        return cls(float(med), float(q1), float(q3), float(a.min()), float(a.max()), int(a.size))

    def spread(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k not in ("median", "n")}


def time_call(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call, by the monotonic high-resolution clock."""
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Call every function once per round, `repeats` rounds; returns seconds per name and each one's last result."""
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            dt, results[name] = time_call(fn)
            seconds[name].append(dt)
    return seconds, results


def paired_ratio(numerator: list[float], denominator: list[float]) -> Stats:
    """Stats of numerator[i] / denominator[i]: a speed-up when both are times of the same work."""
    return Stats.of([a / b for a, b in zip(numerator, denominator) if b > 0])


def quotient_of_medians(a: Stats, b: Stats) -> tuple[float, dict[str, float]]:
    """a.median / b.median for unpaired samples (e.g. throughput windows of two processes), with the
    conservative range [a.q1 / b.q3, a.q3 / b.q1]."""
    value = a.median / b.median if b.median else float("nan")
    low = a.q1 / b.q3 if b.q3 else float("nan")
    high = a.q3 / b.q1 if b.q1 else float("nan")
    return value, {"low": low, "high": high}


def window_rates(stamps: list[float], images_per_step: int, window: int) -> list[float]:
    """Images per second over consecutive windows of `window` steps, from the start time of every step (and the end
    of the last one as the final stamp)."""
    rates = []
    for start in range(0, len(stamps) - window, window):
        dt = stamps[start + window] - stamps[start]
        if dt > 0:
            rates.append(window * images_per_step / dt)
    return rates
