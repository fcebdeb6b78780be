"""Test doubles shared by several test modules: an extractor that needs no training, an empty model registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


class PixelExtractor:
    """A FeatureExtractor that needs no training: fixed random projections of the pixels (16-d features) and of
    those features (class logits), for checks that hold for any extractor. `dataset_classes` is the test's call."""

    name, content_hash = "pixels", "pixels-seed0"

    def __init__(self, pixels: int, num_classes: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.w = torch.randn(pixels, 16, generator=gen, dtype=torch.float64)
        self.head = torch.randn(16, num_classes, generator=gen, dtype=torch.float64)

    def features(self, images: torch.Tensor) -> np.ndarray:
        return (images.flatten(1).double() @ self.w).numpy()

    def probs(self, images: torch.Tensor) -> np.ndarray:
        return self.features_and_probs(images)[1]

    def features_and_probs(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        feats = self.features(images)
        return feats, torch.softmax(torch.from_numpy(feats) @ self.head, dim=1).numpy()


def empty_registry(tmp_path: Path) -> tuple[str, Any, str]:
    """A fresh SQLite store holding registered model "m" and one run for its versions: (uri, client, run_id)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    client.create_registered_model("m")
    return uri, client, run_id
