"""Search spaces: spec keys mapped to Ray Tune distributions, with a sensible default per family."""

from __future__ import annotations

from typing import Any

from genforge.config import SpaceEntry, Spec

DEFAULT_SPACES: dict[str, dict[str, dict[str, Any]]] = {
    "likelihood": {
        "train.lr": {"loguniform": (3e-4, 3e-3)},
        "model.beta": {"uniform": (0.5, 1.5)},
        "model.latent_dim": {"choice": [8, 16, 32]},
    },
    "adversarial": {
        "train.lr": {"loguniform": (5e-5, 1e-3)},
        "train.lr_d": {"loguniform": (5e-5, 1e-3)},
        "model.latent_dim": {"choice": [32, 64, 128]},
    },
}

DEFAULT_METRIC = {"likelihood": "val_neg_elbo", "adversarial": "inloop_fid"}


def space_entries(spec: Spec) -> dict[str, SpaceEntry]:
    from genforge.models import get_family

    if spec.tune.space:
        return dict(spec.tune.space)
    pattern = get_family(spec.model.family).pattern
    return {k: SpaceEntry.model_validate(v) for k, v in DEFAULT_SPACES[pattern].items()}


def objective(spec: Spec) -> str:
    from genforge.models import get_family

    return spec.tune.metric or DEFAULT_METRIC[get_family(spec.model.family).pattern]


def to_tune(entries: dict[str, SpaceEntry]) -> dict[str, Any]:
    from ray import tune

    out = {}
    for key, e in entries.items():
        if e.loguniform:
            out[key] = tune.loguniform(*e.loguniform)
        elif e.uniform:
            out[key] = tune.uniform(*e.uniform)
        else:
            out[key] = tune.choice(e.choice)
    return out


def apply(tree: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Set dotted spec keys in a nested spec dict (in place); returns it."""
    for key, value in values.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value.item() if hasattr(value, "item") else value
    return tree
