"""Reference features and statistics of the real data, cached by (dataset, split, extractor hash, N).

An evaluation pays for the real side once: features (for precision/recall, density/coverage and
nearest neighbours), labels, and the Gaussian statistics with the covariance factor the Fréchet
distance reuses.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evaluation import FeatureStats, feature_stats
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


def reference(extractor, data: ImageSplits, split: str) -> Reference:
    """The real split's features, labels and statistics under `extractor`, computed once and cached."""
    path = reference_path(data, split, extractor.content_hash)
    if path.is_file():
        with np.load(path) as z:
            return Reference(z["features"], z["labels"], FeatureStats.from_dict(z), path)
    part = getattr(data, split)
    images, labels = part.batch(torch.arange(len(part)))
    features = extractor.features(images)
    stats = feature_stats(features, f"{data.name} {split}")
    stats.factor()  # cached with the statistics: an evaluation pays only for the fake side
    _save_atomically(path, features=features, labels=labels.numpy(), **stats.to_dict())
    return Reference(features, labels.numpy(), stats, path)


def _save_atomically(path: Path, **arrays: np.ndarray) -> None:
    """Concurrent cold-cache evaluations each write their own temporary file; the last rename wins, and every
    reader sees a whole file (they hold the same numbers)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
