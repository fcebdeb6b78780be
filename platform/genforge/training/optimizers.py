"""Optimizers and learning-rate schedules built from the spec's `train.*` keys, one place for both trainers.

A role names which network an optimizer drives: "G" and "D" for the adversarial pair, "vae" for the likelihood
pattern. D reads the `*_d` keys (`optimizer_d`, `lr_d`, `beta1_d`) and falls back to G's. With the defaults this
is exactly what genforge did before the keys existed: Adam with betas (0.5, 0.999) for G and D (DCGAN, Radford et
al. 2016) and Adam's own betas (0.9, 0.999) for VAEs, at a constant learning rate.

The schedule is a `LambdaLR` whose factor multiplies each group's base learning rate; it steps once per loop step
(taken or skipped for a non-finite gradient), so its clock is the run's step count and a cosine schedule ends
exactly at the run's last step. `restore` reloads an optimizer and its schedule together and keeps any rescaling of
the optimizer's learning rates made outside the schedule (the worker's rollback halves them in the saved state).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal

import torch
from torch.optim.lr_scheduler import LambdaLR

Role = Literal["G", "D", "vae"]
ADVERSARIAL_BETA1 = 0.5  # DCGAN's Adam beta1: with 0.9, G and D oscillate more (Radford et al. 2016, sec. 4)
DEFAULT_BETA1 = 0.9  # Adam's own default (Kingma & Ba 2015)


@dataclass(frozen=True)
class OptimizerSpec:
    """The resolved hyperparameters of one role's optimizer (defaults and D's fallbacks applied)."""

    name: Literal["adam", "adamw", "sgd", "rmsprop"]
    lr: float
    betas: tuple[float, float]  # Adam/AdamW; betas[1] is RMSprop's alpha
    momentum: float
    nesterov: bool
    weight_decay: float


def optimizer_spec(train: Any, role: Role) -> OptimizerSpec:
    """What `build_optimizer` builds for `role` from a `TrainConfig`."""
    if role not in ("G", "D", "vae"):
        raise ValueError(f"unknown optimizer role {role!r} (G, D or vae)")
    adversarial = role in ("G", "D")
    beta1 = train.beta1 if train.beta1 is not None else (ADVERSARIAL_BETA1 if adversarial else DEFAULT_BETA1)
    if role == "D":
        name = train.optimizer_d or train.optimizer
        lr = train.lr_d or train.lr
        beta1 = train.beta1_d if train.beta1_d is not None else beta1
    else:
        name, lr = train.optimizer, train.lr
    # Nesterov is an SGD option (the spec refuses it elsewhere); D may run another optimizer than G.
    nesterov = bool(train.nesterov) and name == "sgd"
    return OptimizerSpec(name, float(lr), (float(beta1), float(train.beta2)), float(train.momentum), nesterov,
                         float(train.weight_decay))


def build_optimizer(params: Iterable[torch.nn.Parameter], train: Any, role: Role) -> torch.optim.Optimizer:
    """The optimizer of `role` over `params`.

    adam: Adam (Kingma & Ba 2015) with L2 weight decay added to the gradient. adamw: AdamW, weight decay decoupled
    from the adaptive step (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"); with
    weight_decay 0 it equals Adam. sgd: heavy-ball momentum, Nesterov's on request (Sutskever et al. 2013).
    rmsprop: RMSprop (Tieleman & Hinton 2012) with `beta2` as its smoothing constant alpha.
    """
    s = optimizer_spec(train, role)
    if s.name == "adam":
        return torch.optim.Adam(params, lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)
    if s.name == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, betas=s.betas, weight_decay=s.weight_decay)
    if s.name == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov,
                               weight_decay=s.weight_decay)
    if s.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=s.lr, alpha=s.betas[1], momentum=s.momentum,
                                   weight_decay=s.weight_decay)
    raise ValueError(f"unknown optimizer {s.name!r} (adam, adamw, sgd or rmsprop)")


def lr_factor(step: int, schedule: str, warmup_steps: int, total_steps: int | None) -> float:
    """The learning rate of loop step `step + 1` relative to the base rate; `step` steps are done.

    Warm-up (Goyal et al. 2017, "Accurate, Large Minibatch SGD"): (step + 1) / W for the first W steps, so the
    first step already moves and step W runs at the full rate. Then constant: 1; cosine: the SGDR curve without
    restarts (Loshchilov & Hutter 2017, eq. 5, eta_min = 0), 0.5 (1 + cos(pi (step - W) / (T - W))), which
    reaches 0 once the run's T steps are done. `total_steps` (T) is only needed once a cosine is under way.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown lr_schedule {schedule!r} (constant or cosine)")
    if total_steps is None:
        if step == warmup_steps:  # the cosine's start, whatever the run's length (LambdaLR asks when built)
            return 1.0
        raise RuntimeError("lr_schedule cosine needs the run's length: set the trainer's total_steps "
                           "(epochs x steps per epoch) before the first step")
    span = total_steps - warmup_steps  # a warm-up as long as the run leaves no cosine: 0 once it is done
    progress = min(max((step - warmup_steps) / span, 0.0), 1.0) if span > 0 else 1.0
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(opt: torch.optim.Optimizer, train: Any, total_steps: Callable[[], int | None]) -> LambdaLR:
    """`train.lr_schedule` with `train.warmup_steps` over `opt`; `total_steps()` is read when first needed, as the
    training loop learns the run's length (it depends on the dataset and the worker count) after the trainer."""
    schedule, warmup = train.lr_schedule, train.warmup_steps

    def factor(step: int) -> float:  # a plain function: LambdaLR's state_dict then holds no code
        return lr_factor(step, schedule, warmup, total_steps())

    return LambdaLR(opt, factor)


def advance(scheduler: LambdaLR) -> None:
    """One schedule step: after every loop step, including a step skipped for non-finite gradients."""
    with warnings.catch_warnings():
        # LambdaLR warns when the run's very first optimizer step was skipped (non-finite): expected here.
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        scheduler.step()


def restore(opt: torch.optim.Optimizer, scheduler: LambdaLR, opt_state: dict[str, Any],
            scheduler_state: dict[str, Any] | None) -> None:
    """Load an optimizer and its schedule saved together.

    A learning rate found rescaled in the saved optimizer state relative to the schedule's last value (the
    worker's rollback halves `param_groups[i]["lr"]`) rescales that group's base rate alike, so the schedule
    keeps the halving instead of undoing it at the next step. The rate is then recomputed from the schedule,
    which changes it only when the run's length changed (train.epochs raised): the cosine stretches to the new
    end. A checkpoint without a schedule (written before schedules existed) ran at a constant rate: the
    optimizer's rate becomes the base.
    """
    opt.load_state_dict(opt_state)
    loaded = [float(g["lr"]) for g in opt.param_groups]
    if scheduler_state is None:
        scheduler.base_lrs = loaded
        return
    scheduler.load_state_dict(dict(scheduler_state))  # LambdaLR pops and restores keys of what it is given
    last = scheduler_state["_last_lr"]
    scheduler.base_lrs = [base * (lr / prev) if prev > 0 and lr != prev else base
                          for base, lr, prev in zip(scheduler_state["base_lrs"], loaded, last)]
    for group, base, fn in zip(opt.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * fn(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in opt.param_groups]
