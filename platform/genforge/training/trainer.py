"""The interface every optimisation pattern implements, and the one mapping from pattern name to trainer.

The worker loop and the driver talk to a `Trainer` only: they never ask which pattern (or which
family) they hold. A family names its pattern (`genforge.models.Family.pattern`); `PATTERNS` turns
that name into the class, as pythae splits trainers by optimisation pattern rather than by model.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import nn

from genforge.data import ImageSplits, Split
from genforge.training.adversarial_trainer import AdversarialTrainer
from genforge.training.likelihood_trainer import LikelihoodTrainer
from genforge.training.steps import StepResult

Wrap = Callable[[nn.Module], nn.Module]  # DDP on several ranks, the identity on one


@runtime_checkable
class Trainer(Protocol):
    """What a training pattern offers the loop: built as `cls(modules, spec, device, wrap)`."""

    total_steps: int | None  # the run's optimisation steps, set by the loop before the first (a cosine schedule's end)

    @classmethod
    def sanity_check(cls, modules: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, latent_dim: int,
                     conditional: bool) -> None:
        """One no-grad forward pass over freshly built modules on a couple of images (the driver's preflight)."""
        ...

    def step(self, x: torch.Tensor, y: torch.Tensor) -> StepResult:
        """One optimisation step on a batch in [0, 1] with its labels; skipped (ok=False) if non-finite."""
        ...

    def evaluate(self, split: Split, prefix: str) -> dict[str, float]:
        """Held-out numbers, keys prefixed with `prefix` (e.g. `val_neg_elbo`); rank 0 only."""
        ...

    def modules(self) -> dict[str, nn.Module]:
        """The named modules a checkpoint holds and the exported model is built from."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Models, optimizers and counters: tensors and plain containers only (loaded with weights_only)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...

    def prepare_sampler(self, data: ImageSplits) -> None:
        """Rank 0, at each epoch's end before evaluation and grids: fit what sampling needs from the training data
        (the VAE's ex-post latent prior); it is part of the modules' state, so checkpoints and exports carry it."""
        ...

    def sampler(self) -> nn.Module:
        """The module that generates, z (and y) -> [0, 1], in eval mode (for grids and in-loop FID)."""
        ...

    def figures(self, data: ImageSplits, device: torch.device, seed: int) -> dict[str, tuple[torch.Tensor, int]]:
        """The grids drawn each epoch, by artifact folder: (images, row length)."""
        ...

    def back_to_training(self) -> None:
        """Undo `sampler()`'s eval(): every module trains again except G_ema, which always samples."""
        ...


PATTERNS: dict[str, type[Trainer]] = {"adversarial": AdversarialTrainer, "likelihood": LikelihoodTrainer}


def trainer_class(pattern: str) -> type[Trainer]:
    try:
        return PATTERNS[pattern]
    except KeyError:
        raise ValueError(f"unknown training pattern {pattern!r} (choose from {', '.join(PATTERNS)})") from None
