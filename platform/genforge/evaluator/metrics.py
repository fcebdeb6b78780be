"""Compute every metric that applies to a model's family under one protocol.

Every evaluation also reports its floor: what real images score. `fid_floor` and `kid_floor` are FID and KID of
n = min(evaluate.samples, held-out size) real held-out images (the test split, else val; never the reference's
own images) against the same reference. FID is biased upward at small N, so the held-out sets of the bundled
data (digits 180, mnist5k 500 test images) cannot be compared with 10,000 fakes: `fid_at_floor_n` is the FID of
the first n fakes of each draw (mean over draws), and `fid_ratio = fid_at_floor_n / fid_floor` compares like with
like (same N, same reference, same extractor): about 1 for a generator as good as fresh real data, above 1 the
more it falls short. At these N the floor is one noisy draw (other real sets of the same size score 0.5-1.3 of it:
0.86 for mnist5k's val split), so gates on the ratio need room. `fid` itself stays at the full N. KID is
unbiased, so `kid_floor` needs no matching N for its mean (it uses the same subsets and subset size, capped at n).
When the extractor's classes are the dataset's, `recognisable` is the share of samples the classifier labels with
confidence >= 0.9, and for conditional models `cond_accuracy_min` is the accuracy of the worst label.

All families: FID and KID (mean +- std over `evaluate.seeds` independent draws), precision/recall,
density/coverage, the Inception-score analogue, diversity (mean pairwise feature distance overall and
per class) and class coverage (modes hit). Conditional families: the classifier's accuracy on samples
generated for each label, and per-class FID. VAEs: reconstruction (MSE, PSNR, SSIM, BCE), negative
ELBO and the importance-weighted NLL on the test split, in nats and bits per dimension (of the
likelihood the model was trained with, on the data it is a distribution over: Bernoulli on the test split
binarised once with a fixed seed, Gaussian or Laplace discretised over 8-bit pixels; evaluator/likelihood_eval.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import numpy as np
import torch

import evaluation as ev
from genforge.artifacts import LoadedModel
from genforge.data import ImageSplits
from genforge.evaluator.likelihood_eval import protocol_fields, score_split
from genforge.evaluator.protocol import Protocol
from genforge.evaluator.reference import Floor, Reference, heldout_floor, reference
from genforge.sampling import class_cycle

Sampler = Callable[[int, int, "torch.Tensor | None"], torch.Tensor]  # (n, seed, labels) -> images in [0, 1]
RECOGNISABLE_CONFIDENCE = 0.9  # `recognisable`: the classifier's top class probability at least this


@dataclass
class Numbers:
    """Every number of one evaluation, with the protocol and extractor that produced them."""

    metrics: dict[str, float]
    protocol: dict[str, Any]
    extractor: dict[str, Any]
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    draws: list[dict[str, float]] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    floor: dict[str, Any] = field(default_factory=dict)  # where fid_floor/kid_floor come from: split, n, reference

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(Numbers)}


@dataclass
class Report(Numbers):
    """The numbers plus the figures drawn for the report artifact."""

    figures: dict[str, tuple[torch.Tensor, int]] = field(default_factory=dict, repr=False)  # name -> (images, nrow)


def _std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


class _Timer:
    """Seconds per phase, summed over repeats (draws)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, t0: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0


def _protocol(data: ImageSplits, cfg, ref: Reference, extractor_info: dict[str, Any],
              model: LoadedModel | None = None) -> Protocol:
    vae = model.modules.get("vae") if model is not None else None  # a likelihood model: its NLL's protocol too
    return Protocol(
        **protocol_fields(vae.likelihood if vae is not None else None),
        dataset=data.name,
        dataset_fingerprint=data.fingerprint(),
        split=cfg.reference_split,
        reference_n=len(ref.features),
        samples=cfg.samples,
        seeds=tuple(cfg.seed + i for i in range(cfg.seeds)),
        extractor=extractor_info["name"],
        extractor_hash=extractor_info["content_hash"],
        kid_subsets=cfg.kid_subsets,
        kid_subset_size=cfg.kid_subset_size,
    )


def _draws(sample: Sampler, protocol: Protocol, cfg, ref: Reference, extractor, labels, timer: _Timer, echo,
           floor_n: int | None = None):
    """FID and KID of each independent draw, and the FID of its first `floor_n` samples (the floor's N; the first
    n of a class cycle stay class-balanced); returns the draws and the first draw's images, features, probs."""
    draws, first = [], None
    for seed in protocol.seeds:
        t = time.perf_counter()
        fakes = sample(cfg.samples, seed, labels)
        timer.add("generate", t)
        t = time.perf_counter()
        feats, probs = extractor.features_and_probs(fakes)
        timer.add("features", t)
        t = time.perf_counter()
        kid_mean, kid_std = ev.kid(ref.features, feats, subsets=cfg.kid_subsets, subset_size=cfg.kid_subset_size,
                                   seed=seed)
        draw = {"seed": seed, "fid": ev.frechet_distance(ref.stats, feats), "kid": kid_mean, "kid_subset_std": kid_std}
        if floor_n is not None:
            draw["fid_at_floor_n"] = (draw["fid"] if floor_n >= len(feats)
                                      else ev.frechet_distance(ref.stats, feats[:floor_n]))
        timer.add("fid_kid", t)
        echo(f"[genforge] draw seed={seed}: fid={draw['fid']:.4f} kid={draw['kid']:.5f}")
        draws.append(draw)
        first = first or (fakes, feats, probs)
    return draws, first


def _sample_metrics(draws: list[dict[str, float]], ref: Reference, feats: np.ndarray, probs: np.ndarray) -> dict:
    """Mean +- std of FID/KID over draws; PR, DC, IS analogue and diversity of the first draw."""
    metrics: dict[str, float] = {
        "fid": float(np.mean([d["fid"] for d in draws])),
        "fid_std": _std([d["fid"] for d in draws]),
        "kid": float(np.mean([d["kid"] for d in draws])),
        "kid_std": _std([d["kid"] for d in draws]),
    }
    metrics["precision"], metrics["recall"] = ev.precision_recall(ref.features, feats, k=3)
    metrics["density"], metrics["coverage"] = ev.density_coverage(ref.features, feats, k=5)
    metrics["is"], metrics["is_std"] = ev.inception_score(probs, splits=10)
    metrics["diversity"] = ev.mean_pairwise_distance(feats)
    metrics["real_diversity"] = ev.mean_pairwise_distance(ref.features)
    return metrics


def _floor_metrics(draws: list[dict[str, float]], floor: Floor) -> dict[str, float]:
    """The floor beside the fakes' numbers at the floor's N: fid_ratio compares FIDs of the same N.
    fid_ratio_std is the spread over draws (the floor is one fixed set of real images), which promotion reads as
    the ratio's noise."""
    at_n = [d["fid_at_floor_n"] for d in draws]
    metrics = {"fid_floor": floor.fid, "kid_floor": floor.kid, "floor_n": float(floor.n),
               "fid_at_floor_n": float(np.mean(at_n)), "fid_at_floor_n_std": _std(at_n)}
    ok = floor.fid > 0  # zero only if the held-out features equal the reference's: no scale to compare with
    metrics["fid_ratio"] = metrics["fid_at_floor_n"] / floor.fid if ok else float("nan")
    metrics["fid_ratio_std"] = metrics["fid_at_floor_n_std"] / floor.fid if ok else float("nan")
    return metrics


def _class_metrics(ref: Reference, feats: np.ndarray, probs: np.ndarray, labels: torch.Tensor | None, k: int,
                   dataset_classes: bool) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Class coverage, recognisable share, per-class diversity and, for conditional models, accuracy (mean and worst
    label) and per-class FID. Anything read off the classifier needs its classes to be the dataset's
    (`dataset_classes`)."""
    metrics: dict[str, float] = {}
    per_class: dict[str, dict[str, float]] = {}
    predicted = probs.argmax(axis=1)
    if dataset_classes:
        metrics["class_coverage"] = ev.class_coverage(predicted, k)
        metrics["recognisable"] = ev.recognisable(probs, RECOGNISABLE_CONFIDENCE)
        group = labels.numpy() if labels is not None else predicted
        for c, value in ev.per_class_pairwise_distance(feats, group, k).items():
            per_class.setdefault(str(c), {})["diversity"] = value
    if labels is None:
        return metrics, per_class
    y = labels.numpy()
    if dataset_classes:
        metrics["cond_accuracy"] = float((predicted == y).mean())
        metrics["cond_accuracy_min"] = ev.worst_label_accuracy(predicted, y)
    class_fids = []
    for c in range(k):
        stats, rows = ref.class_stats(c), feats[y == c]
        if stats is None or len(rows) < 2:
            continue
        entry = per_class.setdefault(str(c), {})
        entry["fid"] = ev.frechet_distance(stats, rows)
        if dataset_classes:
            entry["accuracy"] = float((predicted[y == c] == c).mean())
        class_fids.append(entry["fid"])
    metrics["fid_per_class_mean"] = float(np.mean(class_fids)) if class_fids else float("nan")
    return metrics, per_class


def evaluate_model(
    model: LoadedModel,
    data: ImageSplits,
    cfg,
    extractor,
    extractor_info: dict[str, Any],
    echo: Callable[[str], None] = print,
    sampler_override: Sampler | None = None,
) -> Report:
    """Every metric that applies to the model's family under the protocol `cfg` describes.
    `sampler_override(n, seed, labels)` replaces generation (used to evaluate arbitrary generators)."""
    timer, t0 = _Timer(), time.perf_counter()
    ref = reference(extractor, data, cfg.reference_split)
    timer.add("reference", t0)
    protocol = _protocol(data, cfg, ref, extractor_info, model)
    t = time.perf_counter()
    floor = heldout_floor(extractor, data, ref, cfg.reference_split, cfg.samples, kid_subsets=cfg.kid_subsets,
                          kid_subset_size=cfg.kid_subset_size, seed=protocol.seeds[0])
    timer.add("floor", t)
    k, conditional = data.num_classes, bool(model.manifest["conditional"])
    labels = class_cycle(cfg.samples, k) if conditional else None
    sample = sampler_override or (lambda n, seed, y: model.generate(n, y, seed=seed))
    draws, (fakes, feats, probs) = _draws(sample, protocol, cfg, ref, extractor, labels, timer, echo,
                                          floor.n if floor else None)
    t = time.perf_counter()
    metrics = _sample_metrics(draws, ref, feats, probs)
    if floor is not None:  # a dataset without a held-out split has no floor: gates on it fail as missing
        metrics.update(_floor_metrics(draws, floor))
        echo(f"[genforge] floor ({floor.n} real {floor.split} images): fid_floor={floor.fid:.4f} "
             f"fid_at_floor_n={metrics['fid_at_floor_n']:.4f} fid_ratio={metrics['fid_ratio']:.3f}")
    class_metrics, per_class = _class_metrics(ref, feats, probs, labels, k, bool(extractor_info.get("dataset_classes")))
    metrics.update(class_metrics)
    timer.add("other_metrics", t)
    figures = {"samples": _sample_figure(fakes, labels, k),
               "nearest_neighbours": _neighbour_figure(fakes, feats, ref, data, cfg)}
    if "vae" in model.modules:  # a likelihood model: reconstruction and NLL on the test split
        t = time.perf_counter()
        with torch.random.fork_rng():  # its seeded posterior samples leave the caller's RNG where it was
            recon_metrics, figures["reconstructions"] = _reconstruction(model, data, cfg.iw_samples, protocol.seeds[0])
        metrics.update(recon_metrics)
        timer.add("reconstruction", t)
    timer.add("total", t0)
    where = {"split": floor.split, "n": floor.n, "reference_split": cfg.reference_split} if floor else {}
    return Report(metrics, protocol.as_dict(), extractor_info, per_class, draws, timer.seconds, floor=where,
                  figures=figures)


def _sample_figure(fakes: torch.Tensor, labels: torch.Tensor | None, k: int) -> tuple[torch.Tensor, int]:
    if labels is None:
        return fakes[:64], 8
    rows = [fakes[labels == c][:8] for c in range(k)]  # one row per class
    return torch.cat(rows), 8


def _neighbour_figure(fakes, feats, ref: Reference, data: ImageSplits, cfg) -> tuple[torch.Tensor, int]:
    """Memorisation check: each of 8 samples followed by its 5 nearest real images in feature space."""
    from evaluation.prdc import pairwise_distances

    _, dist = next(pairwise_distances(feats[:8], ref.features))
    nearest = np.argsort(dist, axis=1)[:, :5]
    split = getattr(data, cfg.reference_split)
    real, _ = split.batch(torch.from_numpy(nearest.reshape(-1)))
    rows = [torch.cat([fakes[i : i + 1], real[i * 5 : (i + 1) * 5]]) for i in range(len(nearest))]
    return torch.cat(rows), 6


def _reconstruction(
    model: LoadedModel, data: ImageSplits, k: int, seed: int
) -> tuple[dict[str, float], tuple[torch.Tensor, int]]:
    """Reconstruction and held-out likelihoods of the test split (evaluator/likelihood_eval.py), and the figure of
    test images each followed by its reconstruction."""
    x_all, y_all = data.test.batch(torch.arange(len(data.test)))
    conditional = bool(model.manifest["conditional"])
    metrics, recon = score_split(model.modules["vae"], x_all, y_all if conditional else None, k, seed)
    pairs = torch.stack([x_all[:32], recon[:32]], dim=1).flatten(0, 1)
    return metrics, (pairs, 16)
