"""Convolutional VAE (Kingma & Welling 2014) with a beta-weighted KL (Higgins et al. 2017).

Objective per image, summed over pixels: recon = -log p(x|z), kl = KL(q(z|x) || N(0, I)),
loss = recon + beta * kl, neg_elbo = recon + kl (the bound in nats, whatever beta is).
Likelihoods: Bernoulli on [0, 1] intensities (logits out), or Gaussian with a learned global scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genforge.models.blocks import ConvDecoder, ConvEncoder


@dataclass
class VAEOutput:
    """Named loss parts (per-image means over the batch) plus what produced them."""

    loss: torch.Tensor
    recon_loss: torch.Tensor
    kl: torch.Tensor
    neg_elbo: torch.Tensor
    recon: torch.Tensor  # mean of p(x|z) in [0, 1]
    mu: torch.Tensor
    logvar: torch.Tensor


class VAE(nn.Module):
    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: int,
        width: int = 32,
        likelihood: str = "bernoulli",
        beta: float = 1.0,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.image_shape, self.latent_dim, self.num_classes = tuple(image_shape), latent_dim, num_classes
        self.likelihood, self.beta = likelihood, beta
        c, h, w = image_shape
        self.encoder = ConvEncoder((c + num_classes, h, w), width)
        self.to_stats = nn.Linear(self.encoder.feature_dim, 2 * latent_dim)
        self.decoder = ConvDecoder(latent_dim + num_classes, image_shape, width)
        # log sigma of the Gaussian likelihood, learned; unused for Bernoulli.
        self.log_sigma = nn.Parameter(torch.zeros(())) if likelihood == "gaussian" else None

    # Conditioning hooks; the conditional VAE overrides these two.
    def _encoder_input(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return x

    def _decoder_input(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return z

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_stats(self.encoder(self._encoder_input(x, y))).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self._decoder_input(z, y))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean image of p(x|z) in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z, y))

    def log_likelihood(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image (B,), summed over pixels, in nats."""
        if self.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        mean, log_sigma = torch.sigmoid(logits), self.log_sigma
        nll = 0.5 * ((x - mean) / log_sigma.exp()) ** 2 + log_sigma + 0.5 * math.log(2 * math.pi)
        return -nll.flatten(1).sum(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> VAEOutput:
        mu, logvar = self.encode(x, y)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation trick
        logits = self.decode_logits(z, y)
        recon = -self.log_likelihood(x, logits)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
        return VAEOutput(
            loss=(recon + self.beta * kl).mean(),
            recon_loss=recon.mean(),
            kl=kl.mean(),
            neg_elbo=(recon + kl).mean(),
            recon=torch.sigmoid(logits),
            mu=mu,
            logvar=logvar,
        )


@torch.no_grad()
def log_importance_weights(vae: VAE, x: torch.Tensor, y: torch.Tensor | None, k: int) -> torch.Tensor:
    """(B, k) log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x) for z_i ~ q(z|x) (Burda et al. 2016)."""
    mu, logvar = vae.encode(x, y)
    std = (0.5 * logvar).exp()
    eps = torch.randn(k, *mu.shape, device=mu.device)
    z = mu + eps * std  # (k, B, d)
    log_norm = -0.5 * math.log(2 * math.pi)
    log_q = (log_norm - 0.5 * logvar - 0.5 * eps.pow(2)).sum(-1)
    log_p_z = (log_norm - 0.5 * z.pow(2)).sum(-1)
    flat_z = z.reshape(k * x.shape[0], -1)
    rep = lambda t: None if t is None else t.repeat(k, *([1] * (t.dim() - 1)))  # noqa: E731
    logits = vae.decode_logits(flat_z, rep(y))
    log_px = vae.log_likelihood(rep(x), logits).view(k, x.shape[0])
    return (log_px + log_p_z - log_q).T


class VAESampler(nn.Module):
    """z (and y) -> images in [0, 1]: the decoder alone, for export and generation."""

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.vae.decode(z, y)


def build(cfg, image_shape: tuple[int, int, int], num_classes: int) -> dict[str, nn.Module]:
    return {"vae": VAE(image_shape, cfg.latent_dim, cfg.width, cfg.likelihood, cfg.beta)}


def sampler(modules: dict[str, nn.Module]) -> nn.Module:
    """Samples are the decoder's means."""
    return VAESampler(modules["vae"])
