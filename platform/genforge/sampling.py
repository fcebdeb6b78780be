"""The one way genforge draws images from a sampler: seeded noise (and labels) -> sampler -> images.

Sample grids, the in-loop FID, evaluation draws and `genforge generate` all come through here, so the same seed
gives the same images everywhere. The noise comes from a private `torch.Generator`: drawing never moves the
global RNG, so sampling in the middle of training leaves the training stream untouched.
"""

from __future__ import annotations

import torch
from torch import nn

from evaluation.extractors.base import inference_batch


def class_cycle(n: int, num_classes: int) -> torch.Tensor:
    """Labels 0, 1, ..., k-1, 0, 1, ...: n conditional samples spread evenly over the classes."""
    return torch.arange(n) % num_classes


@torch.no_grad()
def draw(sampler: nn.Module, latent_dim: int, n: int, *, seed: int = 0, labels: torch.Tensor | None = None,
         device: torch.device | str | None = None, batch_size: int | None = None) -> torch.Tensor:
    """n images in [0, 1] (float32, on the CPU) from z ~ N(0, I) seeded by `seed`; `labels` (n,) for
    conditional samplers. Generated `batch_size` at a time (default: the device's inference batch); all of z is
    drawn first, so the images do not depend on the batch size."""
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} samples")
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    if device is None:
        device = next(sampler.parameters(), torch.empty(0)).device
    batch_size = batch_size or inference_batch(device)
    out = []
    for start in range(0, n, batch_size):
        zb = z[start : start + batch_size].to(device)
        inputs = (zb,) if labels is None else (zb, labels[start : start + batch_size].long().to(device))
        out.append(sampler(*inputs).float().cpu())
    return torch.cat(out).clamp_(0, 1)
