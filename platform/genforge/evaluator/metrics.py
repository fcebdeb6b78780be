"""Compute every metric that applies to a model's family under one protocol.

All families: FID and KID (mean +- std over `evaluate.seeds` independent draws), precision/recall,
density/coverage, the Inception-score analogue, diversity (mean pairwise feature distance overall and
per class) and class coverage (modes hit). Conditional families: the classifier's accuracy on samples
generated for each label, and per-class FID. VAEs: reconstruction (MSE, PSNR, SSIM, BCE), negative
ELBO and the importance-weighted NLL on the test split, in nats and bits per dimension (of the
likelihood the model was trained with: Bernoulli over [0, 1] intensities or Gaussian).
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
from genforge.evaluator.protocol import Protocol
from genforge.evaluator.reference import Reference, reference
from genforge.models.vae import log_importance_weights
from genforge.sampling import class_cycle

Sampler = Callable[[int, int, "torch.Tensor | None"], torch.Tensor]  # (n, seed, labels) -> images in [0, 1]


@dataclass
class Numbers:
    """Every number of one evaluation, with the protocol and extractor that produced them."""

    metrics: dict[str, float]
    protocol: dict[str, Any]
    extractor: dict[str, Any]
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    draws: list[dict[str, float]] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)

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


def _protocol(data: ImageSplits, cfg, ref: Reference, extractor_info: dict[str, Any]) -> Protocol:
    return Protocol(
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


def _draws(sample: Sampler, protocol: Protocol, cfg, ref: Reference, extractor, labels, timer: _Timer, echo):
    """FID and KID of each independent draw; returns the draws and the first draw's images, features, probs."""
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


def _class_metrics(ref: Reference, feats: np.ndarray, probs: np.ndarray, labels: torch.Tensor | None, k: int,
                   dataset_classes: bool) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Class coverage, per-class diversity and, for conditional models, accuracy per label and per-class FID.
    Anything read off the classifier needs its classes to be the dataset's (`dataset_classes`)."""
    metrics: dict[str, float] = {}
    per_class: dict[str, dict[str, float]] = {}
    predicted = probs.argmax(axis=1)
    if dataset_classes:
        metrics["class_coverage"] = ev.class_coverage(predicted, k)
        group = labels.numpy() if labels is not None else predicted
        for c, value in ev.per_class_pairwise_distance(feats, group, k).items():
            per_class.setdefault(str(c), {})["diversity"] = value
    if labels is None:
        return metrics, per_class
    y = labels.numpy()
    if dataset_classes:
        metrics["cond_accuracy"] = float((predicted == y).mean())
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
    protocol = _protocol(data, cfg, ref, extractor_info)
    k, conditional = data.num_classes, bool(model.manifest["conditional"])
    labels = class_cycle(cfg.samples, k) if conditional else None
    sample = sampler_override or (lambda n, seed, y: model.generate(n, y, seed=seed))
    draws, (fakes, feats, probs) = _draws(sample, protocol, cfg, ref, extractor, labels, timer, echo)
    t = time.perf_counter()
    metrics = _sample_metrics(draws, ref, feats, probs)
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
    return Report(metrics, protocol.as_dict(), extractor_info, per_class, draws, timer.seconds, figures)


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


@torch.no_grad()
def _reconstruction(
    model: LoadedModel, data: ImageSplits, k: int, seed: int
) -> tuple[dict[str, float], tuple[torch.Tensor, int]]:
    vae = model.modules["vae"]
    device = next(vae.parameters()).device
    conditional = bool(model.manifest["conditional"])
    torch.manual_seed(seed)
    x_all, y_all = data.test.batch(torch.arange(len(data.test)))
    recons, neg_elbo, iw = [], [], []
    for xb, yb in zip(x_all.split(250), y_all.split(250)):
        xb, yb = xb.to(device), yb.to(device) if conditional else None
        mu, _ = vae.encode(xb, yb)
        recons.append(vae.decode(mu, yb).float().cpu())  # reconstruction at the posterior mean
        neg_elbo.append(vae(xb, yb).neg_elbo.item() * len(xb))
        # Columns are independent samples: compute them 8 at a time to keep decoder batches small.
        log_w = torch.cat([log_importance_weights(vae, xb, yb, min(8, k - i)) for i in range(0, k, 8)], dim=1)
        iw.append(ev.iw_nll(log_w.double().cpu().numpy()))
    recon = torch.cat(recons)
    dims = int(np.prod(data.image_shape))
    nll = float(np.concatenate(iw).mean())
    metrics = {
        "recon_mse": ev.mse(x_all, recon),
        "recon_psnr": ev.psnr(x_all, recon),
        "recon_ssim": ev.ssim(x_all, recon),
        "recon_bce": ev.bce(x_all, recon),
        "nll_elbo": sum(neg_elbo) / len(x_all),  # negative ELBO, one posterior sample per image
        f"nll_iw_k{k}": nll,
        f"bpd_iw_k{k}": float(ev.bits_per_dim(nll, dims)),
    }
    pairs = torch.stack([x_all[:32], recon[:32]], dim=1).flatten(0, 1)
    return metrics, (pairs, 16)
