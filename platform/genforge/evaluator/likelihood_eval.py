"""Held-out likelihoods of VAEs: the data as the likelihood scores it, and the test-split numbers.

The likelihood and the discretisation of the data are part of the evaluation protocol (`protocol_fields`): a
Bernoulli decoder is scored on the held-out images binarised once with a fixed seed ("binarised-seed0"), a Gaussian
or Laplace decoder on the images rounded to 8 bits with the discretised likelihood ("8bit-discretised"; the bundled
`digits` set, 17 grey levels in [0, 1], lands on 17 of the 256 levels). The definitions are evaluation.likelihood's;
the same held-out data serves the trainer's per-epoch validation numbers, so `val_neg_elbo` and the evaluation's
`nll_elbo` measure one thing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import evaluation as ev
from evaluation.extractors.base import inference_batch
from evaluation.likelihood import binarise, quantise_8bit
from genforge.models.vae import VAE, log_importance_weights

BINARISATION_SEED = 0  # the one fixed binarisation of held-out splits (the protocol names it)
IW_CHUNK = 8  # importance samples drawn per call; rows per call keep the decoder's batch at the inference batch


def discretisation(likelihood: str) -> str:
    """The protocol's name for the data a likelihood is scored on."""
    return f"binarised-seed{BINARISATION_SEED}" if likelihood == "bernoulli" else "8bit-discretised"


def protocol_fields(likelihood: str | None) -> dict[str, str | None]:
    """`likelihood` and `discretisation` of an evaluation protocol; None for models without a likelihood (GANs)."""
    if likelihood is None:
        return {"likelihood": None, "discretisation": None}
    return {"likelihood": likelihood, "discretisation": discretisation(likelihood)}


def heldout(x: torch.Tensor, likelihood: str, first_row: int = 0) -> torch.Tensor:
    """Held-out images in [0, 1] (rows first_row, first_row + 1, ... of their split) as the likelihood scores them:
    binarised once with the fixed seed (an image's bits depend on its row only, so batches and the whole split
    agree) or rounded to the 8-bit grid."""
    arr = x.detach().float().cpu().numpy()
    out = binarise(arr, BINARISATION_SEED, first_row) if likelihood == "bernoulli" else quantise_8bit(arr)
    return torch.from_numpy(out).to(dtype=torch.float32, device=x.device)


@torch.no_grad()
def score_split(
    vae: VAE, x_all: torch.Tensor, y_all: torch.Tensor | None, k: int, seed: int, batch_size: int | None = None
) -> tuple[dict[str, float], torch.Tensor]:
    """Reconstruction metrics, negative ELBO and the importance-weighted NLL (k samples) of a split; and the
    reconstructions (posterior means of the raw images, for the figure).

    MSE, PSNR, SSIM and BCE compare the raw images with those reconstructions; `nll_elbo` (one posterior sample
    per image) and `nll_iw_k{k}` / `bpd_iw_k{k}` are in nats and bits per dimension of the held-out data as the
    likelihood scores it (`heldout`). Seeded: the same model and data give the same numbers.
    """
    device = next(vae.parameters()).device
    batch_size = batch_size or inference_batch(device)
    iw_rows = max(1, batch_size // IW_CHUNK)  # rows x IW_CHUNK samples = one decoder batch
    torch.manual_seed(seed)
    observed = heldout(x_all, vae.likelihood)
    recons, neg_elbo, iw = [], [], []
    labels = y_all if y_all is not None else torch.zeros(len(x_all), dtype=torch.long)
    for xb, ob, yb in zip(x_all.split(batch_size), observed.split(batch_size), labels.split(batch_size)):
        xb, ob, yb = xb.to(device), ob.to(device), (yb.to(device) if y_all is not None else None)
        mu, _ = vae.encode(xb, yb)
        recons.append(vae.decode(mu, yb).float().cpu())  # reconstruction at the posterior mean
        neg_elbo.append(vae(ob, yb).neg_elbo.item() * len(xb))
        for start in range(0, len(ob), iw_rows):
            o, y = ob[start : start + iw_rows], (yb[start : start + iw_rows] if yb is not None else None)
            log_w = torch.cat([log_importance_weights(vae, o, y, min(IW_CHUNK, k - i)) for i in range(0, k, IW_CHUNK)],
                              dim=1)
            iw.append(ev.iw_nll(log_w.double().cpu().numpy()))
    recon = torch.cat(recons)
    dims = int(np.prod(x_all.shape[1:]))
    nll = float(np.concatenate(iw).mean())
    metrics: dict[str, Any] = {
        "recon_mse": ev.mse(x_all, recon),
        "recon_psnr": ev.psnr(x_all, recon),
        "recon_ssim": ev.ssim(x_all, recon),
        "recon_bce": ev.bce(x_all, recon),
        "nll_elbo": sum(neg_elbo) / len(x_all),
        f"nll_iw_k{k}": nll,
        f"bpd_iw_k{k}": float(ev.bits_per_dim(nll, dims)),
    }
    return metrics, recon
