"""The family catalogue: every model family genforge trains, described once, without importing torch.

The spec validates `model.family` against it, the model package attaches builders to its entries by name
(`genforge.models`), the trainers are chosen by its `pattern`, the sweep takes its default objective and search
space from it, `genforge families` prints it, and the tests parametrise over it. Adding a family is one entry
here and one model file `genforge/models/<name>.py` defining `build` and `sampler`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Pattern = Literal["likelihood", "adversarial"]


@dataclass(frozen=True)
class PatternInfo:
    """What one optimisation pattern reports and how a sweep searches it by default."""

    epoch_metrics: tuple[str, ...]  # reported to Tune every epoch (inloop_fid when in-loop FID is on)
    tune_metric: str  # the default sweep objective
    search_space: dict[str, dict[str, Any]] = field(default_factory=dict)  # spec key -> distribution


PATTERNS: dict[str, PatternInfo] = {
    "likelihood": PatternInfo(
        epoch_metrics=("val_neg_elbo", "val_recon_loss", "val_kl", "inloop_fid"),
        tune_metric="val_neg_elbo",
        search_space={
            "train.lr": {"loguniform": (3e-4, 3e-3)},
            "model.beta": {"uniform": (0.5, 1.5)},
            "model.latent_dim": {"choice": [8, 16, 32]},
        },
    ),
    "adversarial": PatternInfo(
        epoch_metrics=("inloop_fid", "val_d_real"),
        tune_metric="inloop_fid",
        search_space={
            "train.lr": {"loguniform": (5e-5, 1e-3)},
            "train.lr_d": {"loguniform": (5e-5, 1e-3)},
            # Adam's beta1 often decides whether a GAN trains at all: 0 (no momentum) to 0.5 (DCGAN) to 0.9 (Adam's).
            "train.beta1": {"choice": [0.0, 0.5, 0.9]},
            "model.latent_dim": {"choice": [32, 64, 128]},
        },
    ),
}


@dataclass(frozen=True)
class FamilyInfo:
    name: str
    pattern: Pattern  # which training loop optimises it
    conditional: bool  # takes class labels
    summary: str

    @property
    def training(self) -> PatternInfo:
        return PATTERNS[self.pattern]

    @property
    def auxiliary_classifier(self) -> bool:
        """Whether its D can carry an auxiliary classifier (`model.class_loss_weight`): conditional GANs."""
        return self.pattern == "adversarial" and self.conditional


FAMILIES: dict[str, FamilyInfo] = {
    "gan": FamilyInfo("gan", "adversarial", False, "DCGAN, EMA generator"),
    "vae": FamilyInfo("vae", "likelihood", False, "convolutional VAE"),
    "cgan": FamilyInfo("cgan", "adversarial", True, "label-embedding G, projection D"),
    "cvae": FamilyInfo("cvae", "likelihood", True, "label to encoder and decoder"),
}

# DiffAugment policies (Zhao et al. 2020) a GAN spec may name; models/diffaugment.py implements exactly these.
DIFFAUGMENT_POLICIES = ("color", "translation", "cutout")


def get_family_info(name: str) -> FamilyInfo:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r} (choose from {', '.join(FAMILIES)})") from None
