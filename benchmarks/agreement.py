"""KID, precision/recall and density/coverage on 10,000 x 128 features against torchmetrics and prdc.

Like is compared with like:

- KID (Bińkowski et al. 2018): the unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, averaged over subsets. Subset
  sampling differs between libraries (genforge: numpy `default_rng(seed).choice`; torchmetrics: `torch.randperm`
  under the global torch seed), so each is checked on the other's subsets: genforge's `kid` against
  torchmetrics' `poly_mmd` over genforge's subsets, and torchmetrics' `KernelInceptionDistance` (an identity
  `feature` module, so no Inception and no torch-fidelity) against genforge's `polynomial_mmd2` over the
  subsets its `compute()` draws (replayed from the same torch seed). Float64 on both sides.
- Improved precision and recall (Kynkäänniemi et al. 2019), k = 3, and density and coverage (Naeem et al. 2020),
  k = 5: prdc's `compute_prdc` takes one k for all four, so it is called with 3 for P/R and 5 for D/C. prdc counts
  a point inside a ball with `<`, genforge with `<=`; they differ only on exact ties (none with continuous
  features). prdc's P/R are Kynkäänniemi's (real k-NN balls for precision, fake ones for recall).

Agreement is the largest difference: relative for KID, absolute for the four shares (their scale is 1).
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np

from benchmarks.report import Entry
from benchmarks.timing import interleaved, paired_ratio
from evaluation import density_coverage, kid, precision_recall
from evaluation.kid import polynomial_mmd2

FAMILY = "agreement"


def features(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Correlated Gaussian features; the fake set scaled and shifted so every metric sits away from 0 and 1."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    real = rng.normal(size=(n, dim)) @ mix
    fake = (rng.normal(size=(n, dim)) * 1.05 + 0.05) @ mix
    return real, fake


def have_references() -> dict[str, bool]:
    """Which reference packages are importable (the `bench` extra installs both)."""
    found = {}
    for name in ("torchmetrics", "prdc"):
        try:
            __import__(name)
            found[name] = True
        except ImportError:
            found[name] = False
    return found


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def kid_agreement(real: np.ndarray, fake: np.ndarray, subsets: int, m: int, seed: int = 0) -> dict[str, float]:
    """Largest relative differences of KID mean and std, and of single subsets, both ways round."""
    import torch
    from torch import nn
    from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd

    ours_mean, ours_std = kid(real, fake, subsets=subsets, subset_size=m, seed=seed)
    rng = np.random.default_rng(seed)  # genforge's draws, replayed
    tr, tf = torch.from_numpy(real), torch.from_numpy(fake)
    theirs_on_ours, per_subset = [], []
    for _ in range(subsets):
        xi, yi = rng.choice(len(real), m, replace=False), rng.choice(len(fake), m, replace=False)
        value = float(poly_mmd(tr[xi], tf[yi]))
        theirs_on_ours.append(value)
        per_subset.append(_rel(polynomial_mmd2(real[xi], fake[yi]), value))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "will save all extracted features in buffer"
        metric = KernelInceptionDistance(feature=nn.Identity(), subsets=subsets, subset_size=m)
    metric.update(tr, real=True)
    metric.update(tf, real=False)
    torch.manual_seed(seed)
    tm_mean, tm_std = (float(v) for v in metric.compute())
    torch.manual_seed(seed)  # compute()'s draws, replayed: real then fake permutation per subset
    ours_on_theirs = []
    for _ in range(subsets):
        xi, yi = torch.randperm(len(real))[:m].numpy(), torch.randperm(len(fake))[:m].numpy()
        ours_on_theirs.append(polynomial_mmd2(real[xi], fake[yi]))
    return {
        "kid": ours_mean,
        "kid_mean_rel": max(_rel(ours_mean, float(np.mean(theirs_on_ours))),
                            _rel(float(np.mean(ours_on_theirs)), tm_mean)),
        "kid_std_rel": max(_rel(ours_std, float(np.std(theirs_on_ours))),
                           _rel(float(np.std(ours_on_theirs)), tm_std)),
        "kid_subset_rel": max(per_subset),
    }


def prdc_agreement(real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """genforge's four shares, prdc's, and the largest absolute difference."""
    from prdc import compute_prdc

    ours = dict(zip(("precision", "recall"), precision_recall(real, fake, k=3)))
    ours.update(zip(("density", "coverage"), density_coverage(real, fake, k=5)))
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the sample counts
        pr, dc = compute_prdc(real, fake, nearest_k=3), compute_prdc(real, fake, nearest_k=5)
    theirs = {"precision": pr["precision"], "recall": pr["recall"], "density": dc["density"],
              "coverage": dc["coverage"]}
    diffs = {k: abs(ours[k] - float(theirs[k])) for k in ours}
    return {"ours": ours, "theirs": theirs, "max_abs": max(diffs.values())}


def _timings(real: np.ndarray, fake: np.ndarray, subsets: int, m: int, repeats: int) -> dict[str, list[float]]:
    import torch
    from prdc import compute_prdc
    from torch import nn
    from torchmetrics.image.kid import KernelInceptionDistance

    def torchmetrics_kid():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metric = KernelInceptionDistance(feature=nn.Identity(), subsets=subsets, subset_size=m)
        metric.update(torch.from_numpy(real), real=True)
        metric.update(torch.from_numpy(fake), real=False)
        return metric.compute()

    def prdc_both():
        with contextlib.redirect_stdout(io.StringIO()):
            return compute_prdc(real, fake, nearest_k=3), compute_prdc(real, fake, nearest_k=5)

    seconds, _ = interleaved({
        "kid_genforge": lambda: kid(real, fake, subsets=subsets, subset_size=m),
        "kid_torchmetrics": torchmetrics_kid,
        "prdc_genforge": lambda: (precision_recall(real, fake, k=3), density_coverage(real, fake, k=5)),
        "prdc_package": prdc_both,
    }, repeats)
    return seconds


def run(n: int = 10000, dim: int = 128, subsets: int = 100, subset_size: int = 1000, repeats: int = 3) -> list[Entry]:
    """Agreement entries (targets <= 1e-9) and the speed of each side, as ratios within this run."""
    real, fake = features(n, dim)
    shape = f"{n} x {dim} features a side"
    found = have_references()
    entries: list[Entry] = []
    if not found["torchmetrics"]:
        entries.append(Entry("kid_max_rel_difference_vs_torchmetrics", None, "relative", "<= 1e-9", family=FAMILY,
                             note="torchmetrics not installed (pip install -e '.[bench]')"))
    else:
        k = kid_agreement(real, fake, subsets, subset_size)
        entries.append(Entry(
            "kid_max_rel_difference_vs_torchmetrics", max(k["kid_mean_rel"], k["kid_std_rel"], k["kid_subset_rel"]),
            "relative", "<= 1e-9", family=FAMILY, repeats=subsets,
            note=f"KID {k['kid']:.6g}; same subsets both ways ({subsets} x {subset_size}); {shape}; largest of "
                 f"mean {k['kid_mean_rel']:.1e}, std {k['kid_std_rel']:.1e}, one subset {k['kid_subset_rel']:.1e}"))
    if not found["prdc"]:
        entries.append(Entry("prdc_max_abs_difference_vs_prdc", None, "absolute", "<= 1e-9", family=FAMILY,
                             note="prdc not installed (pip install -e '.[bench]')"))
    else:
        p = prdc_agreement(real, fake)
        shown = ", ".join(f"{key} {value:.4f}" for key, value in p["ours"].items())
        entries.append(Entry("prdc_max_abs_difference_vs_prdc", p["max_abs"], "absolute", "<= 1e-9", family=FAMILY,
                             note=f"P/R k=3, D/C k=5; {shown}; {shape}"))
    if all(found.values()) and repeats > 0:
        s = _timings(real, fake, subsets, subset_size, repeats)
        for name, num, den, what in (
            ("kid_speedup_vs_torchmetrics", "kid_torchmetrics", "kid_genforge", "torchmetrics KID compute"),
            ("prdc_speedup_vs_prdc_package", "prdc_package", "prdc_genforge", "prdc.compute_prdc (k=3 and k=5)"),
        ):
            r = paired_ratio(s[num], s[den])
            entries.append(Entry(name, r.median, "x", family=FAMILY, spread=r.spread(), repeats=r.n,
                                 note=f"{what} time / genforge's; genforge median {np.median(s[den]):.2f} s"))
    return entries
