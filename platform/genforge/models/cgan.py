"""Class-conditional GAN: G takes a label embedding beside z; D is a projection discriminator
(Miyato & Koyama 2018): D(x, y) = psi(phi(x)) + <embed(y), phi(x)>."""

from __future__ import annotations

import torch
from torch import nn

from genforge.models.gan import Discriminator, Generator
from genforge.models.gan import sampler as sampler  # the same EMA-generator sampler


class ConditionalGenerator(Generator):
    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, num_classes: int, width: int = 32) -> None:
        if num_classes < 2:
            raise ValueError("a conditional GAN needs at least 2 classes")
        super().__init__(image_shape, latent_dim, width, num_classes=num_classes)

    def _input(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if y is None:
            raise ValueError("a conditional generator needs labels y")
        return torch.cat([z, self.embed(y.long())], dim=1)


class ProjectionDiscriminator(Discriminator):
    def __init__(
        self, image_shape: tuple[int, int, int], num_classes: int, width: int = 32, spectral_norm: bool = False
    ) -> None:
        super().__init__(image_shape, width, spectral_norm)
        embed = nn.Embedding(num_classes, self.trunk.feature_dim)
        self.embed = nn.utils.parametrizations.spectral_norm(embed) if spectral_norm else embed

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if y is None:
            raise ValueError("a projection discriminator needs labels y")
        h = self.trunk(x)
        return self.head(h).squeeze(1) + (self.embed(y.long()) * h).sum(1)


def build(cfg, image_shape: tuple[int, int, int], num_classes: int) -> dict[str, nn.Module]:
    return {
        "G": ConditionalGenerator(image_shape, cfg.latent_dim, num_classes, cfg.width),
        "D": ProjectionDiscriminator(image_shape, num_classes, cfg.width, cfg.spectral_norm),
    }
