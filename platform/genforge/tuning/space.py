"""Search spaces: spec keys mapped to Ray Tune distributions; defaults come from the family catalogue."""

from __future__ import annotations

from typing import Any

from genforge.config import SpaceEntry, Spec
from genforge.families import get_family_info


def space_entries(spec: Spec) -> dict[str, SpaceEntry]:
    """The spec's `tune.space`, else its family's default search space (genforge.families)."""
    if spec.tune.space:
        return dict(spec.tune.space)
    defaults = get_family_info(spec.model.family).training.search_space
    return {k: SpaceEntry.model_validate(v) for k, v in defaults.items()}


def objective(spec: Spec) -> str:
    """The spec's `tune.metric`, else its family's default objective."""
    return spec.tune.metric or get_family_info(spec.model.family).training.tune_metric


def to_tune(entries: dict[str, SpaceEntry]) -> dict[str, Any]:
    from ray import tune

    out = {}
    for key, e in entries.items():
        if e.loguniform:
            out[key] = tune.loguniform(*e.loguniform)
        elif e.uniform:
            out[key] = tune.uniform(*e.uniform)
        elif e.grid is not None:
            out[key] = tune.grid_search(e.grid)
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
