"""One optimizer on a likelihood bound: the training step of VAEs and conditional VAEs."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from genforge.data import Split
from genforge.training.steps import StepResult, apply_step, autocast


class LikelihoodTrainer:
    """Minimises loss = recon + beta * KL (see models/vae.py)."""

    def __init__(self, modules: dict[str, nn.Module], spec, device: torch.device, wrap: Callable[[nn.Module], nn.Module]):
        self.spec, self.device = spec, device
        self.vae = modules["vae"].to(device)
        self.model = wrap(self.vae)
        self.opt = torch.optim.Adam(self.vae.parameters(), lr=spec.train.lr)
        self.conditional = spec.model.conditional

    def modules(self) -> dict[str, nn.Module]:
        return {"vae": self.vae}

    def step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        with autocast(self.device):
            out = self.model(x, y if self.conditional else None)
        ok, grad_norm = apply_step(out.loss, self.opt, self.vae.parameters())
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
    def evaluate(self, split: Split, prefix: str, batch_size: int = 500) -> dict[str, float]:
        """Mean per-image negative ELBO and its parts on a split (one posterior sample per image)."""
        self.vae.eval()
        totals = {"neg_elbo": 0.0, "recon_loss": 0.0, "kl": 0.0}
        for start in range(0, len(split), batch_size):
            x, y = split.batch(torch.arange(start, min(start + batch_size, len(split))))
            x, y = x.to(self.device), y.to(self.device)
            out = self.vae(x, y if self.conditional else None)
            for key in totals:
                totals[key] += float(getattr(out, key)) * x.shape[0]
        self.vae.train()
        return {f"{prefix}_{k}": v / max(len(split), 1) for k, v in totals.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"vae": self.vae.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.vae.load_state_dict(state["vae"])
        self.opt.load_state_dict(state["opt"])
