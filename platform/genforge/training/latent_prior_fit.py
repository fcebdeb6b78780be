"""Fit the VAE's ex-post sampling prior (models/latent_prior.py) to the posterior means of the training images.

Ghosh et al. 2020, sec. 4: after (here: at the end of every epoch of) training, a density fitted to the codes
mu(x) of the training set replaces N(0, I) for drawing. The conditional VAE gets one full-covariance Gaussian per
label (sample mean and covariance of that label's codes); the VAE a Gaussian mixture fitted by EM, started from a
seeded choice of rows (then warm-started from the previous epoch's fit, which the checkpoint holds), so a resumed run
refits the same prior. Deterministic: no draw from the global torch RNG.
EM is written here, not taken from scikit-learn: its GaussianMixture took 5 s per fit (and 2.4 s to import) on
4,000 random 16-dimensional codes on a busy 2-core machine, and the fit runs at every epoch's end.
"""

from __future__ import annotations

import math

import torch

from evaluation.extractors.base import inference_batch
from genforge.data import Split
from genforge.evaluator.likelihood_eval import heldout
from genforge.models.vae import VAE

MAX_ROWS = 10_000  # codes a fit uses (the first rows of the split): ample for tens of Gaussians in tens of dimensions
REG_COVAR = 1e-4  # added to each covariance's diagonal, as GaussianMixture's reg_covar: keeps the factor finite
FIT_SEED = 0
EM_ITERATIONS = 100
EM_TOL = 1e-3  # nats per code: converged when the mean log-likelihood gains less (scikit-learn's default tol)


@torch.no_grad()
def posterior_means(vae: VAE, split: Split, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes mu(x) (N, d) in float64, labels (N,)) of the split's first MAX_ROWS images as the likelihood sees
    them (binarised once with the evaluation's seed, or on the 8-bit grid); a conditional VAE encodes with labels."""
    was_training = vae.training
    vae.eval()
    device = next(vae.parameters()).device
    mus, labels = [], []
    n = min(len(split), MAX_ROWS)
    batch_size = batch_size or inference_batch(device)
    for start in range(0, n, batch_size):
        x, y = split.batch(torch.arange(start, min(start + batch_size, n)))
        x = heldout(x, vae.likelihood, first_row=start).to(device)
        mu, _ = vae.encode(x, y.to(device) if vae.num_classes else None)
        mus.append(mu.double().cpu())
        labels.append(y.cpu())
    vae.train(was_training)
    return torch.cat(mus), torch.cat(labels)


def _gaussian(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    cov = torch.cov(codes.T).reshape(codes.shape[1], codes.shape[1])
    return codes.mean(0), torch.linalg.cholesky(cov + REG_COVAR * torch.eye(codes.shape[1], dtype=codes.dtype))


Mixture = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # weights (k,), means (k, d), Cholesky factors (k, d, d)


def gaussian_mixture(x: torch.Tensor, k: int, init: Mixture | None = None, iterations: int = EM_ITERATIONS,
                     tol: float = EM_TOL, seed: int = FIT_SEED) -> Mixture:
    """(weights (k,), means (k, d), Cholesky factors (k, d, d)) of a k-component full-covariance Gaussian mixture
    fitted to x (N, d) by EM (Dempster et al. 1977; Bishop 2006, sec. 9.2.2), started from k distinct rows drawn
    with a seeded generator as the means and the data's covariance for each component (scikit-learn's
    `random_from_data`), or from `init` (the previous epoch's fit: a few iterations then suffice). Stops when the
    mean log-likelihood gains less than `tol`. float64 throughout."""
    n, d = x.shape
    eye = torch.eye(d, dtype=x.dtype)
    if init is not None:
        weight, mean, tril = (t.to(x.dtype) for t in init)
    else:
        mean = x[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k]].clone()
        tril = _gaussian(x)[1].expand(k, d, d).clone()
        weight = torch.full((k,), 1.0 / k, dtype=x.dtype)
    previous = -math.inf
    for _ in range(iterations):
        # E step: log w_k + log N(x | mean_k, L_k L_k^T) for every row and component, normalised per row.
        diff = (x[None] - mean[:, None]).transpose(1, 2)  # (k, d, N)
        maha = torch.linalg.solve_triangular(tril, diff, upper=False).pow(2).sum(1)  # (k, N)
        log_det = 2.0 * torch.log(torch.diagonal(tril, dim1=1, dim2=2)).sum(1)
        log_p = weight.log()[:, None] - 0.5 * (maha + log_det[:, None] + d * math.log(2 * math.pi))
        log_total = torch.logsumexp(log_p, 0)
        resp = torch.exp(log_p - log_total).T  # (N, k)
        # M step: weights, means and covariances from the responsibilities.
        nk = resp.sum(0) + 10 * torch.finfo(x.dtype).eps
        weight, mean = nk / n, (resp.T @ x) / nk[:, None]
        centred = x[None] - mean[:, None]  # (k, N, d)
        cov = (centred * resp.T[:, :, None]).transpose(1, 2) @ centred / nk[:, None, None]
        tril = torch.linalg.cholesky(cov + REG_COVAR * eye)
        score = float(log_total.mean())
        if score - previous < tol:
            break
        previous = score
    return weight, mean, tril


def fit_latent_prior(vae: VAE, split: Split) -> bool:
    """Fit `vae.prior` to the split's codes; False (prior left as it was) when there are too few images."""
    prior = vae.prior
    components, d = prior.mean.shape
    codes, labels = posterior_means(vae, split)
    if len(codes) < 2 * components or not torch.isfinite(codes).all():
        return False
    if prior.by_label:
        weight = torch.ones(components, dtype=torch.float64)
        mean = torch.zeros(components, d, dtype=torch.float64)
        tril = torch.eye(d, dtype=torch.float64).repeat(components, 1, 1)
        for k in range(components):
            mine = codes[labels == k]
            if len(mine) >= 2:  # a label with fewer images keeps N(0, I)
                weight[k] = len(mine)
                mean[k], tril[k] = _gaussian(mine)
    else:
        previous = (prior.weight, prior.mean, prior.scale_tril) if bool(prior.fitted) else None
        weight, mean, tril = gaussian_mixture(codes, components, init=previous)
    prior.set(weight.to(prior.weight), mean.to(prior.mean), tril.to(prior.scale_tril))
    return True
