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


# Images per forward pass when nothing trains: on a CPU, 128 at a time ran these 28x28 networks (the domain
# classifier, the DCGAN generator, the VAE's encoder and decoder) 1.5-2.5x faster than 500-2,000 at a time on a
# 2-core machine (1 and 2 threads): a batch's activations stay in the caches. GPUs want large batches.
CPU_INFERENCE_BATCH = 128
GPU_INFERENCE_BATCH = 1000


def inference_batch(device: torch.device | str | None) -> int:
    """Images per forward pass for inference on `device`: small on a CPU, large on an accelerator."""
    return CPU_INFERENCE_BATCH if device is None or torch.device(device).type == "cpu" else GPU_INFERENCE_BATCH


@torch.no_grad()
def batched(fn, images: torch.Tensor, batch_size: int, device: torch.device) -> list[torch.Tensor]:
    """Apply fn to images in batches on `device`; results come back on the CPU."""
    out = []
    for start in range(0, len(images), batch_size):
        out.append(fn(images[start : start + batch_size].to(device)).float().cpu())
    return out
