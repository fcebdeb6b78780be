"""Convolutional VAE (Kingma & Welling 2014) with a beta-weighted KL (Higgins et al. 2017).

Objective per image, summed over pixels: recon = -log p(x|z), kl = KL(q(z|x) || N(0, I)),
loss = recon + beta * kl, neg_elbo = recon + kl (the bound in nats, whatever beta is).

Likelihoods are distributions over the data they score (evaluation/likelihood.py has the definitions in numpy):
Bernoulli (cross-entropy, logits out) over binary pixels, trained with dynamic binarisation (`observe` draws fresh
bits x_b ~ Bernoulli(x) every step); Gaussian (MSE-like) and Laplace (L1-like), with a learned global scale, as
discretised likelihoods of 8-bit pixels (the density integrated over each 1/255-wide bin, the end bins open),
so -log p(x|z) >= 0 and bits per dimension cannot go negative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genforge.models.blocks import ConvDecoder, ConvEncoder
from genforge.models.latent_prior import LatentPrior

LIKELIHOODS = ("bernoulli", "gaussian", "laplace")
LEVELS = 256  # the continuous likelihoods are over 8-bit pixels k / 255
MID_BIN = -1e-10  # log-ratio of a bin's CDF values above which its mass is taken as density x width


def observe(x: torch.Tensor, likelihood: str) -> torch.Tensor:
    """A training batch in [0, 1] as the likelihood sees it.

    bernoulli: dynamic binarisation, fresh bits x_b = [u < x], u ~ U(0, 1) from the torch RNG on every call (the
    checkpointed RNG makes a resumed run draw the same bits); gaussian/laplace: x rounded to the 8-bit grid (exact
    for 8-bit data). Non-finite pixels stay non-finite, so a poisoned batch still shows as a non-finite loss.
    """
    if likelihood == "bernoulli":
        bits = (torch.rand_like(x) < x).to(x.dtype)
        return torch.where(torch.isfinite(x), bits, x)
    return torch.round(x * (LEVELS - 1)) / (LEVELS - 1)


def _log_cdf(t: torch.Tensor, kind: str) -> torch.Tensor:
    """log F(t) of the standard Gaussian or Laplace; branches clamped so the unused one has finite gradients."""
    if kind == "gaussian":
        return torch.special.log_ndtr(t)
    return torch.where(t < 0, t.clamp(max=0.0) - math.log(2.0), torch.log1p(-0.5 * torch.exp(-t.clamp(min=0.0))))


def _log_pdf(t: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "gaussian":
        return -0.5 * t.pow(2) - 0.5 * math.log(2 * math.pi)
    return -t.abs() - math.log(2.0)


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - e^d) for d < 0 (expm1 near 0, log1p further out: Maechler 2012)."""
    return torch.where(d > -math.log(2.0), torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))


def discretised_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, kind: str) -> torch.Tensor:
    """log P(x) per pixel of 8-bit x = k / 255 under a Gaussian or Laplace of `mean` and exp(log_scale) in [0, 1]
    units, integrated over the pixel's bin [k - 1/2, k + 1/2] / 255 with the end bins open to -inf / +inf
    (Salimans et al. 2017). In float64: a sharp decoder's bin mass is a difference of close CDF values. The mass
    is taken on the side of the smaller tail, in logs; a bin so narrow against the scale that its CDF values
    coincide falls back to density x width (PixelCNN++'s guard). Matches evaluation.likelihood.discretised_log_prob.
    """
    k = torch.round(x.double() * (LEVELS - 1))
    centre, half = k / (LEVELS - 1), 0.5 / (LEVELS - 1)
    mean, log_scale = mean.double(), log_scale.double()
    inv = torch.exp(-log_scale)
    lo, hi, mid = (centre - half - mean) * inv, (centre + half - mean) * inv, (centre - mean) * inv
    log_f_hi, log_f_lo = _log_cdf(hi, kind), _log_cdf(lo, kind)
    log_s_lo, log_s_hi = _log_cdf(-lo, kind), _log_cdf(-hi, kind)
    below = mid < 0
    d = torch.where(below, log_f_lo - log_f_hi, log_s_hi - log_s_lo)
    inner = torch.where(below, log_f_hi, log_s_lo) + _log1mexp(d.clamp(max=MID_BIN))
    narrow = _log_pdf(mid, kind) - log_scale + math.log(1.0 / (LEVELS - 1))
    inner = torch.where(d > MID_BIN, narrow, inner)
    return torch.where(k == 0, log_f_hi, torch.where(k == LEVELS - 1, log_s_lo, inner))


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
        prior_components: int = 20,
    ) -> None:
        super().__init__()
        self.image_shape, self.latent_dim, self.num_classes = tuple(image_shape), latent_dim, num_classes
        self.likelihood, self.beta = likelihood, beta
        c, h, w = image_shape
        self.encoder = ConvEncoder((c + num_classes, h, w), width)
        self.to_stats = nn.Linear(self.encoder.feature_dim, 2 * latent_dim)
        self.decoder = ConvDecoder(latent_dim + num_classes, image_shape, width)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r} (choose from {', '.join(LIKELIHOODS)})")
        # The log of the continuous likelihoods' scale (Gaussian sigma, Laplace b), learned and shared by the
        # pixels; unused for Bernoulli. Named log_sigma for both, as in checkpoints from before Laplace.
        self.log_sigma = nn.Parameter(torch.zeros(())) if likelihood != "bernoulli" else None
        # What samples are drawn from (models/latent_prior.py): N(0, I) until a prior is fitted to the training
        # codes; one Gaussian per label for the conditional VAE, a mixture of `prior_components` otherwise.
        self.prior = LatentPrior(num_classes or prior_components, latent_dim, by_label=num_classes > 0)

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

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        """A training batch as this model's likelihood sees it (module function `observe`)."""
        return observe(x, self.likelihood)

    def log_likelihood(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image (B,), summed over pixels, in nats (float32). x is data the likelihood is over:
        binary for Bernoulli (on grey levels it is their cross-entropy, not a probability), 8-bit otherwise."""
        if self.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none").flatten(1).sum(1)
        log_p = discretised_log_prob(x, torch.sigmoid(logits.float()), self.log_sigma, self.likelihood)
        return log_p.flatten(1).sum(1).float()

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
    """Standard normal z (and y) -> images in [0, 1]: the sampling prior's transform and the decoder, for export
    and generation."""

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.vae.decode(self.vae.prior(z, y), y)


def build(cfg, image_shape: tuple[int, int, int], num_classes: int) -> dict[str, nn.Module]:
    return {"vae": VAE(image_shape, cfg.latent_dim, cfg.width, cfg.likelihood, cfg.beta,
                       prior_components=cfg.prior_components)}


def sampler(modules: dict[str, nn.Module]) -> nn.Module:
    """Samples are the decoder's means at draws from the sampling prior."""
    return VAESampler(modules["vae"])
