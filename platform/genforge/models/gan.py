"""DCGAN-style GAN (Radford et al. 2016) with the losses and stabilisers small datasets need.

Losses: non-saturating (Goodfellow et al. 2014, the -log D(G(z)) generator loss) or hinge
(Lim & Ye 2017; Miyato et al. 2018). Options: spectral norm in D, R1 penalty on reals
(Mescheder et al. 2018): gamma/2 * E||grad_x D(x)||^2, and DiffAugment (Zhao et al. 2020).
G outputs tanh images in [-1, 1]; the sampler maps them to [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genforge.models.blocks import ConvDecoder, ConvEncoder


class Generator(nn.Module):
    def __init__(
        self, image_shape: tuple[int, int, int], latent_dim: int, width: int = 32, num_classes: int = 0
    ) -> None:
        super().__init__()
        self.image_shape, self.latent_dim, self.num_classes = tuple(image_shape), latent_dim, num_classes
        # Conditional generators (cgan.py) concatenate a learned label embedding to z.
        self.embed = nn.Embedding(num_classes, min(latent_dim, 64)) if num_classes else None
        embed_dim = self.embed.embedding_dim if self.embed is not None else 0
        self.net = ConvDecoder(latent_dim + embed_dim, image_shape, width)

    def _input(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return z

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return torch.tanh(self.net(self._input(z, y)))


class Discriminator(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], width: int = 32, spectral_norm: bool = False) -> None:
        super().__init__()
        self.trunk = ConvEncoder(image_shape, width, spectral_norm=spectral_norm)
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        self.head = sn(nn.Linear(self.trunk.feature_dim, 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B,)."""
        return self.head(self.trunk(x)).squeeze(1)


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "hinge":
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()  # non-saturating: -log sigmoid(D(G(z)))


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """E ||grad_x D(x)||^2 over the batch; `real` must require grad."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


class GANSampler(nn.Module):
    """z (and y) -> images in [0, 1] from G (normally G_ema), for export and generation."""

    def __init__(self, G: Generator) -> None:
        super().__init__()
        self.G = G

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return (self.G(z, y) + 1.0) * 0.5


def build(cfg, image_shape: tuple[int, int, int], num_classes: int) -> dict[str, nn.Module]:
    """The modules the adversarial trainer optimises (G_ema is added by genforge.models.build_models)."""
    return {
        "G": Generator(image_shape, cfg.latent_dim, cfg.width),
        "D": Discriminator(image_shape, cfg.width, cfg.spectral_norm),
    }


def sampler(modules: dict[str, nn.Module]) -> nn.Module:
    """Samples come from the EMA generator."""
    return GANSampler(modules["G_ema"])
