"""One optimizer on a likelihood bound: the training step of VAEs and conditional VAEs.

Each step trains on the batch as the likelihood sees it (models/vae.py `observe`: freshly binarised for Bernoulli,
8-bit for the discretised Gaussian and Laplace); held-out numbers use the evaluation's fixed version of the split
(evaluator/likelihood_eval.py `heldout`), so they are comparable from epoch to epoch and with `genforge evaluate`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from evaluation.extractors.base import inference_batch
from genforge.data import ImageSplits, Split
from genforge.evaluator.likelihood_eval import heldout
from genforge.images import reconstruction_pairs
from genforge.models.vae import VAESampler
from genforge.training import health, optimizers
from genforge.training.latent_prior_fit import fit_latent_prior
from genforge.training.steps import BufferGuard, StepResult, apply_step, autocast, sample_figure

RECONSTRUCTIONS = 32  # validation images in the per-epoch reconstruction grid


class LikelihoodTrainer:
    """Minimises loss = recon + beta * KL (see models/vae.py): the likelihood pattern of the `Trainer`
    interface (training/trainer.py)."""

    def __init__(
        self, modules: dict[str, nn.Module], spec, device: torch.device, wrap: Callable[[nn.Module], nn.Module]
    ) -> None:
        self.spec, self.device = spec, device
        self.vae = modules["vae"].to(device)
        self.model = wrap(self.vae)
        self.opt = optimizers.build_optimizer(self.vae.parameters(), spec.train, "vae")  # Adam by default
        self.total_steps: int | None = None  # the run's length, set by the loop: where a cosine schedule ends
        self.sched = optimizers.build_scheduler(self.opt, spec.train, lambda: self.total_steps)
        self.conditional = spec.model.conditional

    @classmethod
    def sanity_check(cls, modules: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, latent_dim: int,
                     conditional: bool) -> None:
        """One forward pass on the driver before workers start: a shape error shows here, once."""
        with torch.no_grad():
            modules["vae"](x, y if conditional else None)

    def modules(self) -> dict[str, nn.Module]:
        return {"vae": self.vae}

    def step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        guard = BufferGuard(self.vae)
        x = self.vae.observe(x)  # dynamic binarisation draws from the torch RNG: a resumed run draws the same bits
        with autocast(self.device):
            out = self.model(x, y if self.conditional else None)
        ok, grad_norm = apply_step(out.loss, self.opt, self.vae.parameters(), self.spec.train.grad_clip)
        if not ok:
            guard.restore()
        optimizers.advance(self.sched)
        return StepResult(
            ok=ok,
            metrics={
                "loss": out.loss.detach(),
                "recon_loss": out.recon_loss.detach(),
                "kl": out.kl.detach(),
                "neg_elbo": out.neg_elbo.detach(),
                "grad_norm": grad_norm,
            },
        )

    @torch.no_grad()
    def evaluate(self, split: Split, prefix: str, batch_size: int | None = None) -> dict[str, float]:
        """Mean per-image negative ELBO and its parts on a split (one posterior sample per image), and the
        posterior-collapse signals: active units and the largest per-dimension KL (training/health.py)."""
        self.vae.eval()
        totals = {"neg_elbo": 0.0, "recon_loss": 0.0, "kl": 0.0}
        mus, logvars = [], []
        batch_size = batch_size or inference_batch(self.device)
        for start in range(0, len(split), batch_size):
            x, y = split.batch(torch.arange(start, min(start + batch_size, len(split))))
            x, y = heldout(x, self.vae.likelihood, first_row=start).to(self.device), y.to(self.device)
            out = self.vae(x, y if self.conditional else None)
            for key in totals:
                totals[key] += float(getattr(out, key)) * x.shape[0]
            mus.append(out.mu.float().cpu())
            logvars.append(out.logvar.float().cpu())
        self.vae.train()
        metrics = {f"{prefix}_{k}": v / max(len(split), 1) for k, v in totals.items()}
        if mus:
            mu, logvar = torch.cat(mus), torch.cat(logvars)
            metrics[f"{prefix}_active_units"] = float(health.active_units(mu))
            metrics[f"{prefix}_kl_max_dim"] = float(health.kl_per_dimension(mu, logvar).max())
        return metrics

    def prepare_sampler(self, data: ImageSplits) -> None:
        """Fit the ex-post sampling prior to the training images' codes (model.sampling_prior: expost)."""
        if self.spec.model.sampling_prior == "expost":
            fit_latent_prior(self.vae, data.train)

    def sampler(self) -> nn.Module:
        """The decoder mapped to [0, 1]; puts the VAE in eval mode (`back_to_training` undoes it)."""
        return VAESampler(self.vae).eval()

    @torch.no_grad()
    def figures(self, data: ImageSplits, device: torch.device, seed: int) -> dict[str, tuple[torch.Tensor, int]]:
        """The sample grid, and validation inputs each followed by its reconstruction (16 to a row)."""
        samples = sample_figure(self.sampler(), self.spec, data.num_classes, device, seed)
        x, y = data.val.batch(torch.arange(min(RECONSTRUCTIONS, len(data.val))))
        out = self.vae(x.to(device), y.to(device) if self.conditional else None)
        return {"samples": samples, "reconstructions": (reconstruction_pairs(x, out.recon.cpu()), 16)}

    def back_to_training(self) -> None:
        self.vae.train()

    def state_dict(self) -> dict[str, Any]:
        return {"vae": self.vae.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.vae.load_state_dict(state["vae"])
        # With its schedule (training/optimizers.py: a rollback's halved rate stays halved).
        optimizers.restore(self.opt, self.sched, state["opt"], state.get("sched"))
