"""What every extractor provides; the name and hash go into each evaluation's protocol."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class FeatureExtractor(Protocol):
    name: str
    content_hash: str  # of the weights: numbers from different extractor weights are never compared

    def features(self, images: torch.Tensor) -> np.ndarray: ...

    def probs(self, images: torch.Tensor) -> np.ndarray: ...

    def features_and_probs(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Both in one pass over the network: what an evaluation draw needs."""
        ...


@torch.no_grad()
def batched(fn, images: torch.Tensor, batch_size: int, device: torch.device) -> list[torch.Tensor]:
    """Apply fn to images in batches on `device`; results come back on the CPU."""
    out = []
    for start in range(0, len(images), batch_size):
        out.append(fn(images[start : start + batch_size].to(device)).float().cpu())
    return out
