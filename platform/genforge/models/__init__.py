"""Builders for the families of the catalogue (genforge.families), attached to its entries by name.

Models never import Ray or MLflow. `build` returns the named modules a trainer optimises
(`vae`, or `G` and `D`); `sampler` wraps the module that generates, mapping z (and y) to [0, 1].
A new family: an entry in genforge/families.py, a model file here, and its builders in `BUILDERS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from genforge.families import FAMILIES as CATALOGUE
from genforge.families import FamilyInfo, get_family_info
from genforge.models.cgan import ConditionalGenerator, ProjectionDiscriminator
from genforge.models.cvae import CVAE
from genforge.models.gan import Discriminator, GANSampler, Generator
from genforge.models.vae import VAE, VAESampler


@dataclass(frozen=True)
class Family:
    """A catalogue entry (genforge.families) with the builders of its modules attached."""

    info: FamilyInfo
    build: Callable[..., dict[str, nn.Module]]  # (model config, image shape, classes) -> the modules it trains
    sampler: Callable[[dict[str, nn.Module]], nn.Module]  # modules -> z (and y) to images in [0, 1]

    name = property(lambda self: self.info.name)
    pattern = property(lambda self: self.info.pattern)
    conditional = property(lambda self: self.info.conditional)
    summary = property(lambda self: self.info.summary)


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


def _gan_sampler(modules: dict[str, nn.Module]) -> nn.Module:
    return GANSampler(modules["G_ema"])


def _vae_sampler(modules: dict[str, nn.Module]) -> nn.Module:
    return VAESampler(modules["vae"])


BUILDERS = {"gan": (_gan, _gan_sampler), "vae": (_vae, _vae_sampler), "cgan": (_cgan, _gan_sampler),
            "cvae": (_cvae, _vae_sampler)}
if set(BUILDERS) != set(CATALOGUE):
    raise ImportError(f"model builders {sorted(BUILDERS)} do not match the family catalogue {sorted(CATALOGUE)}")

FAMILIES: dict[str, Family] = {name: Family(info, *BUILDERS[name]) for name, info in CATALOGUE.items()}


def get_family(name: str) -> Family:
    get_family_info(name)  # the catalogue's error names the choices
    return FAMILIES[name]


def build_models(model_cfg, image_shape: tuple[int, int, int], num_classes: int) -> dict[str, nn.Module]:
    """All modules of a family; a family with a generator G also gets G_ema, the EMA copy it samples from."""
    import copy

    modules = get_family(model_cfg.family).build(model_cfg, tuple(image_shape), num_classes)
    if "G" in modules:
        modules["G_ema"] = copy.deepcopy(modules["G"]).eval().requires_grad_(False)
    return modules
