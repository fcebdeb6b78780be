"""Reference features and statistics of the real data, cached by (dataset, split, extractor hash, N).

An evaluation pays for the real side once: features (for precision/recall, density/coverage and
nearest neighbours), labels, and the Gaussian statistics with the covariance factor the Fréchet
distance reuses. The same goes for the floor: what real held-out images score against the reference.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import torch

from evaluation import FeatureStats, feature_stats, frechet_distance, kid
from genforge.data import ImageSplits
from genforge.evaluator.cache import cache_dir


@dataclass
class Reference:
    features: np.ndarray
    labels: np.ndarray
    stats: FeatureStats
    path: Path

    def class_stats(self, c: int) -> FeatureStats | None:
        rows = self.features[self.labels == c]
        return feature_stats(rows, f"real class {c}") if len(rows) > 1 else None


def reference_path(data: ImageSplits, split: str, extractor_hash: str) -> Path:
    n = len(getattr(data, split))
    return cache_dir() / "reference" / f"{data.name}-{data.fingerprint()}-{split}-{extractor_hash}-n{n}.npz"


REFERENCE_CHUNK = 2048  # images decoded and featurised at once: a streamed folder's split is never decoded whole


def _features_in_chunks(extractor, part) -> tuple[np.ndarray, torch.Tensor]:
    """Features and labels of every image of a split, a chunk at a time."""
    features, labels = [], []
    for start in range(0, len(part), REFERENCE_CHUNK):
        images, y = part.batch(torch.arange(start, min(start + REFERENCE_CHUNK, len(part))))
        features.append(extractor.features(images))
        labels.append(y)
    return np.concatenate(features), torch.cat(labels)


def reference(extractor, data: ImageSplits, split: str) -> Reference:
    """The real split's features, labels and statistics under `extractor`, computed once and cached."""
    path = reference_path(data, split, extractor.content_hash)
    if path.is_file():
        with np.load(path) as z:
            return Reference(z["features"], z["labels"], FeatureStats.from_dict(z), path)
    part = getattr(data, split)
    features, labels = _features_in_chunks(extractor, part)
    stats = feature_stats(features, f"{data.name} {split}")
    stats.factor()  # cached with the statistics: an evaluation pays only for the fake side
    _save_atomically(path, features=features, labels=labels.numpy(), **stats.to_dict())
    return Reference(features, labels.numpy(), stats, path)


FLOOR_SPLITS = ("test", "val", "train")  # the held-out split of the floor: the first of these that is not the reference


def heldout_split(data: ImageSplits, reference_split: str) -> str | None:
    """The real images the floor compares with the reference: test, else val (else train when the reference is
    itself a held-out split), never the reference's own images; None when no other split has 2 images."""
    return next((s for s in FLOOR_SPLITS if s != reference_split and len(getattr(data, s)) >= 2), None)


@dataclass(frozen=True)
class Floor:
    """What real images score against the reference: FID and KID of `n` images of the held-out `split` (the same
    N as the fakes' `fid_at_floor_n`)."""

    split: str
    n: int
    fid: float
    kid: float
    kid_subset_std: float


def heldout_floor(extractor, data: ImageSplits, ref: Reference, reference_split: str, n_max: int, *,
                  kid_subsets: int, kid_subset_size: int, seed: int) -> Floor | None:
    """The floor of an evaluation: FID and KID of min(n_max, held-out size) real held-out images against `ref`,
    computed once per (data, splits, extractor, N, KID settings) and cached beside the reference statistics.

    The held-out images are a fixed subsample (seeded permutation, without replacement) when the split holds more
    than `n_max`; never drawn with replacement (duplicates would shrink the covariance and fake a low FID).
    None when the dataset has no held-out split."""
    split = heldout_split(data, reference_split)
    if split is None:
        return None
    heldout = reference(extractor, data, split)  # features cached like the reference's
    n = min(n_max, len(heldout.features))
    path = (cache_dir() / "reference" / f"floor-{data.name}-{data.fingerprint()}-{reference_split}-{split}-"
            f"{extractor.content_hash}-n{n}-kid{kid_subsets}x{kid_subset_size}-s{seed}.json")
    if path.is_file():
        return Floor(**json.loads(path.read_text()))
    rows = np.sort(np.random.default_rng(0).permutation(len(heldout.features))[:n])
    real = heldout.features[rows]
    kid_mean, kid_std = kid(ref.features, real, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    result = Floor(split, n, frechet_distance(ref.stats, real), kid_mean, kid_std)
    _write_atomically(path, lambda handle: handle.write(json.dumps(asdict(result)).encode()))
    return result


def _save_atomically(path: Path, **arrays: np.ndarray) -> None:
    _write_atomically(path, lambda handle: np.savez(handle, **arrays), ".npz")


def _write_atomically(path: Path, write: Callable[[BinaryIO], object], suffix: str = ".json") -> None:
    """Concurrent cold-cache evaluations each write their own temporary file; the last rename wins, and every
    reader sees a whole file (they hold the same numbers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
