"""An adversarial pair of optimizers: the training step of GANs and conditional GANs.

Per step: one D update on real and detached fake images (one forward over both, so DDP sees one
pass), then one G update through D (under D.no_sync(): D's gradients from the G step are thrown
away, so they need no all-reduce), then the EMA of G with a ramped-up decay (`steps.ema_decay_at`).
With `model.class_loss_weight` (conditional GANs) both updates add the auxiliary classifier's
cross-entropy (AC-GAN, Odena et al. 2017): D's on the real images' labels only (so D stays a
classifier of real digits, not of G's mistakes), G's on the labels it was asked to draw.
G_ema is what samples everywhere: grids, in-loop FID, the exported model, evaluation.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from evaluation.extractors.base import inference_batch
from genforge.data import ImageSplits, Split
from genforge.models.diffaugment import diff_augment
from genforge.models.gan import GANSampler, d_loss, g_loss, r1_penalty
from genforge.training import optimizers
from genforge.training.steps import (
    BufferGuard,
    StepResult,
    apply_step,
    autocast,
    ema_decay_at,
    ema_update,
    sample_figure,
)


class AdversarialTrainer:
    """The adversarial pattern of the `Trainer` interface (training/trainer.py)."""

    def __init__(
        self, modules: dict[str, nn.Module], spec, device: torch.device, wrap: Callable[[nn.Module], nn.Module]
    ) -> None:
        self.spec, self.device, self.m = spec, device, spec.model
        self.G, self.D, self.G_ema = (modules[k].to(device) for k in ("G", "D", "G_ema"))
        self.G_ddp, self.D_ddp = wrap(self.G), wrap(self.D)
        # train.optimizer/lr/beta1 for G, their *_d keys for D (default: G's); Adam, betas (0.5, 0.999) by default.
        self.opt_G = optimizers.build_optimizer(self.G.parameters(), spec.train, "G")
        self.opt_D = optimizers.build_optimizer(self.D.parameters(), spec.train, "D")
        self.total_steps: int | None = None  # the run's length, set by the loop: where a cosine schedule ends
        self.sched_G = optimizers.build_scheduler(self.opt_G, spec.train, lambda: self.total_steps)
        self.sched_D = optimizers.build_scheduler(self.opt_D, spec.train, lambda: self.total_steps)
        self.num_classes = self.G.num_classes
        self.ema_step = 0  # optimizer steps taken: the EMA ramp-up's clock (kept in the state dict)

    @classmethod
    def sanity_check(cls, modules: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, latent_dim: int,
                     conditional: bool) -> None:
        """One G -> D pass on the driver before workers start: a shape error shows here, once."""
        with torch.no_grad():
            fake = modules["G"](torch.randn(x.shape[0], latent_dim), y if conditional else None)
            modules["D"](fake, y if conditional else None)

    def modules(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema}

    def _labels(self, n: int) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        return torch.randint(0, self.num_classes, (n,), device=self.device)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        n, policy = x.shape[0], self.m.diffaugment
        y_real = y if self.num_classes else None
        guard = BufferGuard(self.G, self.D)

        # D step
        real = (x * 2.0 - 1.0).requires_grad_(self.m.r1_gamma > 0)
        y_fake = self._labels(n)
        with torch.no_grad(), autocast(self.device):
            fake = self.G(torch.randn(n, self.m.latent_dim, device=self.device), y_fake)
        labels = None if y_real is None else torch.cat([y_real, y_fake])
        with autocast(self.device):
            logits, classes = self._D(diff_augment(torch.cat([real, fake.float()]), policy), labels)
        real_logits, fake_logits = logits[:n], logits[n:]
        adv_d = d_loss(real_logits, fake_logits, self.m.gan_loss)
        r1 = r1_penalty(real_logits, real) if self.m.r1_gamma > 0 else torch.zeros((), device=self.device)
        cls_d = self._class_loss(classes, y_real, n)
        clip = self.spec.train.grad_clip
        loss_d = adv_d + 0.5 * self.m.r1_gamma * r1 + self.m.class_loss_weight * cls_d
        ok_d, gn_d = apply_step(loss_d, self.opt_D, self.D.parameters(), clip)

        # G step
        y_fake = self._labels(n)
        no_sync = self.D_ddp.no_sync() if hasattr(self.D_ddp, "no_sync") else contextlib.nullcontext()
        with no_sync:
            with autocast(self.device):
                fake = self.G_ddp(torch.randn(n, self.m.latent_dim, device=self.device), y_fake)
                fake_logits_g, classes_g = self._D(diff_augment(fake, policy), y_fake)
            adv_g = g_loss(fake_logits_g, self.m.gan_loss)
            cls_g = self._class_loss(classes_g, y_fake, n)
            ok_g, gn_g = apply_step(adv_g + self.m.class_loss_weight * cls_g, self.opt_G, self.G.parameters(), clip)
        if not (ok_d and ok_g):
            guard.restore()
        optimizers.advance(self.sched_D)
        optimizers.advance(self.sched_G)
        self.ema_step += 1
        ema_update(self.G_ema, self.G, ema_decay_at(self.ema_step, self.m.ema_decay, self.m.ema_rampup))

        classifier = {}
        if self.m.class_loss_weight > 0:  # the auxiliary classifier on real labels; on G's: does G draw what it's asked
            classifier = {"class_loss_d": cls_d.detach(), "class_loss_g": cls_g.detach()}
        return StepResult(
            ok=ok_d and ok_g,
            metrics={
                **classifier,
                "d_loss": adv_d.detach(),
                "g_loss": adv_g.detach(),
                "r1": r1.detach(),
                "d_real": torch.sigmoid(real_logits.detach()).mean(),
                "d_fake": torch.sigmoid(fake_logits.detach()).mean(),
                "d_real_acc": (real_logits.detach() > 0).float().mean(),  # near 1 with d_fake_acc: D overpowers
                "d_fake_acc": (fake_logits.detach() < 0).float().mean(),
                "grad_norm_d": gn_d,
                "grad_norm_g": gn_g,
            },
        )

    def _D(self, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's adversarial logits (float) and, with the auxiliary classifier on, its class logits."""
        if self.m.class_loss_weight > 0:
            logits, classes = self.D_ddp(x, y, classes=True)
            return logits.float(), classes.float()
        return self.D_ddp(x, y).float(), None

    def _class_loss(self, classes: torch.Tensor | None, y: torch.Tensor | None, n: int) -> torch.Tensor:
        """Cross-entropy of the first n rows' class logits against y (zero without the classifier)."""
        if classes is None or y is None:
            return torch.zeros((), device=self.device)
        return F.cross_entropy(classes[:n], y.long())

    @torch.no_grad()
    def evaluate(self, split: Split, prefix: str, batch_size: int | None = None) -> dict[str, float]:
        """Mean D(x) on held-out reals: its gap to the training D(x) shows D overfitting (Karras et al. 2020)."""
        if len(split) == 0:
            return {}
        self.D.eval()
        idx = torch.arange(min(len(split), 2000))
        probs = []
        for chunk in idx.split(batch_size or inference_batch(self.device)):
            x, y = split.batch(chunk)
            x, y = x.to(self.device) * 2.0 - 1.0, y.to(self.device)
            probs.append(torch.sigmoid(self.D(x, y if self.num_classes else None)).float())
        self.D.train()
        return {f"{prefix}_d_real": float(torch.cat(probs).mean())}

    def prepare_sampler(self, data: ImageSplits) -> None:
        """Nothing to fit: G samples from N(0, I) as it was trained."""

    def sampler(self) -> nn.Module:
        """G_ema mapped to [0, 1], in eval mode (G_ema never trains)."""
        return GANSampler(self.G_ema).eval()

    def figures(self, data: ImageSplits, device: torch.device, seed: int) -> dict[str, tuple[torch.Tensor, int]]:
        return {"samples": sample_figure(self.sampler(), self.spec, data.num_classes, device, seed)}

    def back_to_training(self) -> None:
        self.G.train()
        self.D.train()

    def state_dict(self) -> dict[str, Any]:
        return {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "sched_G": self.sched_G.state_dict(),
            "sched_D": self.sched_D.state_dict(),
            "ema_step": self.ema_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("G", "D", "G_ema"):
            getattr(self, key).load_state_dict(state[key])
        # Schedules and optimizers load together (training/optimizers.py: a rollback's halved rates stay halved).
        optimizers.restore(self.opt_G, self.sched_G, state["opt_G"], state.get("sched_G"))
        optimizers.restore(self.opt_D, self.sched_D, state["opt_D"], state.get("sched_D"))
        # Checkpoints from before the ramp-up lack the counter: G's Adam step count is the same clock
        # (short only by steps skipped for non-finite gradients).
        self.ema_step = int(state["ema_step"]) if "ema_step" in state else _adam_steps(self.opt_G)


def _adam_steps(opt: torch.optim.Optimizer) -> int:
    """Steps an Adam optimizer has taken (0 before its first)."""
    steps = [s["step"] for s in opt.state.values() if "step" in s]
    return int(max(steps)) if steps else 0
