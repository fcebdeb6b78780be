"""Conditional VAE (Sohn et al. 2015): the label, one-hot, is given to encoder and decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genforge.models.vae import VAE
from genforge.models.vae import sampler as sampler  # the decoder, as for the VAE


class CVAE(VAE):
    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, num_classes: int, **kwargs) -> None:
        if num_classes < 2:
            raise ValueError("a conditional VAE needs at least 2 classes")
        super().__init__(image_shape, latent_dim, num_classes=num_classes, **kwargs)

    def _one_hot(self, y: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        if y is None:
            raise ValueError("CVAE needs labels y")
        return F.one_hot(y.long(), self.num_classes).to(like.dtype)

    def _encoder_input(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        onehot = self._one_hot(y, x)[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return torch.cat([x, onehot], dim=1)

    def _decoder_input(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return torch.cat([z, self._one_hot(y, z)], dim=1)


def build(cfg, image_shape: tuple[int, int, int], num_classes: int) -> dict[str, nn.Module]:
    return {"vae": CVAE(image_shape, cfg.latent_dim, num_classes, width=cfg.width, likelihood=cfg.likelihood,
                        beta=cfg.beta)}
