"""Class-conditional GAN: G takes a label embedding beside z; D is a projection discriminator
(Miyato & Koyama 2018): D(x, y) = psi(phi(x)) + <embed(y), phi(x)>.

Optionally D also carries an auxiliary classifier on phi(x) (AC-GAN, Odena et al. 2017, `model.class_loss_weight`):
D learns the labels of real images and G is trained to draw images that D classifies as the label asked for. The
projection alone let labels drift on the 5,000 digits (a worst label from 0 to 1 and back between epochs); the
classifier's cross-entropy gives G a direct, dense signal for the label."""

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
        self, image_shape: tuple[int, int, int], num_classes: int, width: int = 32, spectral_norm: bool = False,
        classifier: bool = False,
    ) -> None:
        super().__init__(image_shape, width, spectral_norm)
        embed = nn.Embedding(num_classes, self.trunk.feature_dim)
        self.embed = nn.utils.parametrizations.spectral_norm(embed) if spectral_norm else embed
        # The auxiliary classifier is not spectrally normalised: its logits must be free to grow confident.
        self.classifier = nn.Linear(self.trunk.feature_dim, num_classes) if classifier else None

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None = None, classes: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Adversarial logits (B,); with `classes`, also the auxiliary classifier's logits (B, num_classes)."""
        if y is None:
            raise ValueError("a projection discriminator needs labels y")
        h = self.trunk(x)
        logits = self.head(h).squeeze(1) + (self.embed(y.long()) * h).sum(1)
        if not classes:
            return logits
        if self.classifier is None:
            raise ValueError("this discriminator has no auxiliary classifier (model.class_loss_weight is 0)")
        return logits, self.classifier(h)


def build(cfg, image_shape: tuple[int, int, int], num_classes: int) -> dict[str, nn.Module]:
    return {
        "G": ConditionalGenerator(image_shape, cfg.latent_dim, num_classes, cfg.width),
        "D": ProjectionDiscriminator(image_shape, num_classes, cfg.width, cfg.spectral_norm,
                                     classifier=cfg.class_loss_weight > 0),
    }
