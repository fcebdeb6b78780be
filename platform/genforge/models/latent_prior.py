"""The VAE's sampling prior: N(0, I), or Gaussians fitted ex post to the posterior means of the training images.

A VAE's aggregate posterior q(z) = E_x q(z|x) does not fill N(0, I): prior draws land between the training codes
and decode to blurs or to a different digit than the label asked for. Ghosh et al. 2020 ("From Variational to
Deterministic Autoencoders", sec. 4) fit a density to the posterior means after training and sample from it
instead ("ex-post density estimation"), which lowers the FID of VAE samples markedly. genforge fits, for the
conditional VAE, one full-covariance Gaussian per label (the label picks it) and, for the VAE, a mixture of full-
covariance Gaussians (fitted in training/latent_prior_fit.py). The likelihood numbers (ELBO, importance-weighted
NLL) are those of the model's N(0, I) prior; only drawing changes.

Sampling stays a deterministic function of standard normal noise, so seeded draws (genforge.sampling) stay
reproducible: for a mixture, z_0's uniform u = Phi(z_0) picks the component k by the cumulative weights, and the
position of u inside k's interval, again uniform and independent of k, is mapped back to a fresh z_0; then
z' = mean_k + L_k z with L_k the Cholesky factor of component k's covariance.
"""

from __future__ import annotations

import torch
from torch import nn

U_EPS = 1e-12  # keeps the re-drawn uniform off 0 and 1, where the normal quantile is infinite


class LatentPrior(nn.Module):
    """Buffers of P Gaussian components in d dimensions; unfitted it is N(0, I) and leaves z unchanged."""

    def __init__(self, components: int, latent_dim: int, by_label: bool) -> None:
        super().__init__()
        self.by_label = by_label  # conditional VAE: component = label; otherwise a mixture
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("weight", torch.full((components,), 1.0 / components))
        self.register_buffer("mean", torch.zeros(components, latent_dim))
        self.register_buffer("scale_tril", torch.eye(latent_dim).repeat(components, 1, 1))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Checkpoints and models from before the fitted prior have none of these buffers: they load unfitted (N(0, I)).
        for name, value in self._buffers.items():
            state_dict.setdefault(prefix + name, value)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def set(self, weight: torch.Tensor, mean: torch.Tensor, scale_tril: torch.Tensor) -> None:
        """Install fitted components (weights summing to 1, means, lower Cholesky factors of the covariances)."""
        if mean.shape != self.mean.shape or scale_tril.shape != self.scale_tril.shape:
            raise ValueError(f"prior of shape {tuple(mean.shape)} for {tuple(self.mean.shape)}")
        self.weight.copy_(weight / weight.sum())
        self.mean.copy_(mean)
        self.scale_tril.copy_(scale_tril)
        self.fitted.fill_(True)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Standard normal z (B, d) -> a draw from this prior (for label y when fitted by label)."""
        if self.by_label:
            if y is None:
                raise ValueError("a prior fitted by label needs labels y")
            k, noise = y.long(), z
        else:
            k, noise = self._pick_component(z)
        drawn = self.mean[k] + (self.scale_tril[k] @ noise.unsqueeze(-1)).squeeze(-1)
        # A select, not an `if`: the sampler is exported with torch.export, which cannot branch on a buffer's value.
        return torch.where(self.fitted, drawn, z)

    def _pick_component(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.special.ndtr(z[:, 0].double())  # Phi(z_0), uniform on (0, 1)
        weight = self.weight.double()
        upper = torch.cumsum(weight, 0)
        k = torch.searchsorted(upper, u, right=True).clamp(max=len(upper) - 1)
        rest = ((u - (upper[k] - weight[k])) / weight[k]).clamp(U_EPS, 1 - U_EPS)
        return k, torch.cat([torch.special.ndtri(rest).to(z.dtype)[:, None], z[:, 1:]], dim=1)
