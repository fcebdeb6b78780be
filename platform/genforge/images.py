"""Image grids and loss-curve figures (torchvision grids, matplotlib plots)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from genforge.sampling import draw


def sample_images(
    sampler: nn.Module, latent_dim: int, num_classes: int, device: torch.device, *, n: int = 64, seed: int = 0,
    conditional: bool = False,
) -> tuple[torch.Tensor, int]:
    """Fixed-noise samples in [0, 1] and the grid's row length.

    Conditional models get one row per class (8 samples each), so a wrong label shows at a glance.
    The noise comes from its own seeded generator: the grid of every epoch uses the same z.
    """
    if conditional:
        per_class = 8
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        return draw(sampler, latent_dim, len(labels), seed=seed, labels=labels, device=device), per_class
    return draw(sampler, latent_dim, n, seed=seed, device=device), 8


def reconstruction_pairs(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Interleave inputs and reconstructions: each input is followed by its reconstruction."""
    pairs = torch.stack([x, recon], dim=1).flatten(0, 1)
    return pairs.float().clamp(0, 1).cpu()


def save_grid(images: torch.Tensor, nrow: int, path: str | Path) -> Path:
    # Imported here: torchvision's package import pulls in torch._dynamo (~2 s), which every Ray worker and CLI
    # process importing this module would pay at start-up.
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=nrow, padding=2, pad_value=0.5)
    return path


def loss_curves(history: dict[str, list[tuple[int, float]]], path: str | Path, title: str = "") -> Path:
    """One panel per metric, step on x: the end-of-run summary figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(history)
    cols = min(3, max(len(keys), 1))
    rows = (len(keys) + cols - 1) // cols or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys):
        steps, values = zip(*sorted(history[key])) if history[key] else ((), ())
        ax.plot(steps, values, lw=1.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
