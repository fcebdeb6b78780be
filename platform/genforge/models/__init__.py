"""Builders for the families of the catalogue (genforge.families), attached to its entries by name.

Models never import Ray or MLflow. `build` returns the named modules a trainer optimises
(`vae`, or `G` and `D`); `sampler` wraps the module that generates, mapping z (and y) to [0, 1].
A new family is an entry in genforge/families.py and a model file here named after it (`<name>.py`) that
defines `build(model_cfg, image_shape, num_classes)` and `sampler(modules)`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from torch import nn

from genforge.families import FAMILIES as CATALOGUE
from genforge.families import FamilyInfo, get_family_info


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


def _attach(info: FamilyInfo) -> Family:
    """The family's model file is `genforge/models/<name>.py`; it defines `build` and `sampler`."""
    module = importlib.import_module(f"genforge.models.{info.name}")
    return Family(info, module.build, module.sampler)


FAMILIES: dict[str, Family] = {name: _attach(info) for name, info in CATALOGUE.items()}


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
