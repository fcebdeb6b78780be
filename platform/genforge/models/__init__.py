"""Model registry: one entry per family, keyed by the spec's `model.family`.

Models never import Ray or MLflow. `build` returns the named modules a trainer optimises
(`vae`, or `G` and `D`); `sampler` wraps the module that generates, mapping z (and y) to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from torch import nn

from genforge.models.cgan import ConditionalGenerator, ProjectionDiscriminator
from genforge.models.cvae import CVAE
from genforge.models.gan import Discriminator, GANSampler, Generator
from genforge.models.vae import VAE, VAESampler


@dataclass(frozen=True)
class Family:
    name: str
    pattern: Literal["likelihood", "adversarial"]  # which training loop optimises it
    conditional: bool
    build: Callable[..., dict[str, nn.Module]]
    sampler: Callable[[dict[str, nn.Module]], nn.Module]
    summary: str


def _vae(cfg, shape, num_classes) -> dict[str, nn.Module]:
    return {"vae": VAE(shape, cfg.latent_dim, cfg.width, cfg.likelihood, cfg.beta)}


def _cvae(cfg, shape, num_classes) -> dict[str, nn.Module]:
    return {"vae": CVAE(shape, cfg.latent_dim, num_classes, width=cfg.width, likelihood=cfg.likelihood, beta=cfg.beta)}


def _gan(cfg, shape, num_classes) -> dict[str, nn.Module]:
    return {
        "G": Generator(shape, cfg.latent_dim, cfg.width),
        "D": Discriminator(shape, cfg.width, cfg.spectral_norm),
    }


def _cgan(cfg, shape, num_classes) -> dict[str, nn.Module]:
    return {
        "G": ConditionalGenerator(shape, cfg.latent_dim, num_classes, cfg.width),
        "D": ProjectionDiscriminator(shape, num_classes, cfg.width, cfg.spectral_norm),
    }


FAMILIES: dict[str, Family] = {
    "gan": Family("gan", "adversarial", False, _gan, lambda m: GANSampler(m["G_ema"]), "DCGAN, EMA generator"),
    "vae": Family("vae", "likelihood", False, _vae, lambda m: VAESampler(m["vae"]), "convolutional VAE"),
    "cgan": Family("cgan", "adversarial", True, _cgan, lambda m: GANSampler(m["G_ema"]), "label-embedding G, projection D"),
    "cvae": Family("cvae", "likelihood", True, _cvae, lambda m: VAESampler(m["vae"]), "label to encoder and decoder"),
}


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r} (choose from {', '.join(FAMILIES)})") from None


def build_models(model_cfg, image_shape: tuple[int, int, int], num_classes: int) -> dict[str, nn.Module]:
    """All modules of a family, G_ema included for adversarial ones (a copy of G)."""
    import copy

    family = get_family(model_cfg.family)
    modules = family.build(model_cfg, tuple(image_shape), num_classes)
    if family.pattern == "adversarial":
        modules["G_ema"] = copy.deepcopy(modules["G"]).eval().requires_grad_(False)
    return modules
