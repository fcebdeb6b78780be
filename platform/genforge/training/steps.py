"""Pieces shared by the training patterns: the guarded optimizer step, autocast, EMA, the sample grid."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn

from genforge.images import sample_images


@dataclass
class StepResult:
    ok: bool  # False when the step was skipped for a non-finite loss or gradient
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


def autocast(device: torch.device):
    """bf16 autocast on GPU; plain fp32 on CPU (CPU autocast is slower than fp32 for these convs)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def apply_step(
    loss: torch.Tensor, opt: torch.optim.Optimizer, params: Iterable[nn.Parameter], max_norm: float | None = None
) -> tuple[bool, torch.Tensor]:
    """Backward, then step only if loss and gradients are finite; returns (stepped, global gradient norm).

    Gradients are already all-reduced by DDP when the norm is taken, so every rank sees the same
    norm and takes the same decision: ranks never diverge on a skipped step. With `max_norm`
    (train.grad_clip) gradients are rescaled to that global norm at most (Pascanu et al. 2013); the
    norm returned is the one before clipping, so a log shows how often clipping engages.
    """
    opt.zero_grad(set_to_none=True)
    loss.backward()
    # A non-finite norm makes the clip coefficient NaN too; the step is skipped and the gradients dropped anyway.
    limit = float("inf") if max_norm is None else float(max_norm)
    grad_norm = torch.nn.utils.clip_grad_norm_(list(params), limit)
    ok = bool(torch.isfinite(grad_norm))  # a non-finite loss gives non-finite gradients
    if ok:
        opt.step()
    opt.zero_grad(set_to_none=True)
    return ok, grad_norm.detach()


class BufferGuard:
    """Floating buffers (BatchNorm running statistics) as they were before a step. A forward pass over a
    non-finite batch poisons them even when the optimizer step is then skipped, so a skipped step restores them:
    otherwise the next checkpoint would hold NaN statistics (and be refused)."""

    def __init__(self, *modules: nn.Module) -> None:
        self.saved = [(b, b.detach().clone()) for m in modules for b in m.buffers() if b.is_floating_point()]

    @torch.no_grad()
    def restore(self) -> None:
        for buffer, saved in self.saved:
            buffer.copy_(saved)


def ema_decay_at(step: int, decay: float, rampup: float) -> float:
    """The EMA decay for optimizer step `step` (1-based), with the ramp-up of Karras et al.

    The EMA's half-life in steps at full length is H = ln 0.5 / ln(decay) (693 steps at 0.999). With
    ramp-up r > 0 it is capped at r * t after t steps, H_t = min(H, r * t), and the decay is
    0.5 ** (1 / H_t): early on the EMA follows G closely (step 1 copies it almost exactly) instead of
    holding G's initial weights for thousands of steps. This is stylegan2-ada's `ema_rampup` (Karras et
    al. 2020, "Training Generative Adversarial Networks with Limited Data", training_loop.py) and
    EDM's (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models"),
    counted in steps instead of images. rampup = 0 gives the constant `decay` from step 1.
    """
    if rampup <= 0 or decay <= 0:
        return decay
    half_life = math.log(0.5) / math.log(decay)
    ramped = rampup * max(step, 1)
    if ramped >= half_life:
        return decay  # past the ramp: exactly the configured decay
    return 0.5 ** (1.0 / ramped)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers (BN statistics) are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def sample_figure(
    sampler: nn.Module, spec, num_classes: int, device: torch.device, seed: int
) -> tuple[torch.Tensor, int]:
    """The epoch's fixed-noise sample grid (rows per class for conditional models) and its row length."""
    return sample_images(
        sampler, spec.model.latent_dim, num_classes, device, seed=seed, conditional=spec.model.conditional
    )
