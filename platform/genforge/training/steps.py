"""Pieces shared by the training patterns: the guarded optimizer step, autocast, EMA."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn


@dataclass
class StepResult:
    ok: bool  # False when the step was skipped for a non-finite loss or gradient
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


def autocast(device: torch.device):
    """bf16 autocast on GPU; plain fp32 on CPU (CPU autocast is slower than fp32 for these convs)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def apply_step(loss: torch.Tensor, opt: torch.optim.Optimizer, params: Iterable[nn.Parameter]) -> tuple[bool, torch.Tensor]:
    """Backward, then step only if loss and gradients are finite.

    Gradients are already all-reduced by DDP when the norm is taken, so every rank sees the same
    norm and takes the same decision: ranks never diverge on a skipped step.
    """
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(list(params), float("inf"))
    ok = bool(torch.isfinite(grad_norm))  # a non-finite loss gives non-finite gradients
    if ok:
        opt.step()
    opt.zero_grad(set_to_none=True)
    return ok, grad_norm.detach()


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers (BN statistics) are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
