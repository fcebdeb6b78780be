"""Training checkpoints: complete, verified, and loaded without unpickling.

A checkpoint directory holds `state.pt` (state_dicts of models, optimizers, EMA and every rank's RNG
state: tensors and plain containers only, loaded with `weights_only=True`) and `meta.json` (step,
epoch, the MLflow run id, the resolved spec and the sha256 of `state.pt`). `meta.json` is written
last, so a directory without a matching meta is incomplete and never resumed from.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genforge.files import write_json_atomically

STATE_FILE, META_FILE = "state.pt", "meta.json"
PREFIX = "checkpoint_step_"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    pass


# The score of a checkpoint written before any validation: it ranks last (Ray's snapshot would store inf as null).
UNSCORED = 1e30


def score_metric(spec) -> str | None:
    """The validation number that ranks checkpoints for `train.keep_checkpoints` (lower is better): the family's
    default Tune objective when every epoch reports it (a GAN's in-loop FID only with `evaluate.every_epochs`);
    None keeps the latest checkpoints only."""
    from genforge.families import get_family_info

    name = get_family_info(spec.model.family).training.tune_metric
    return None if name == "inloop_fid" and not spec.evaluate.every_epochs else name


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dir_name(step: int) -> str:
    """Step-numbered, so names sort in training order and are never reused."""
    return f"{PREFIX}{step:09d}"


def write(directory: str | Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, directory / STATE_FILE)
    meta = {**meta, "format_version": FORMAT_VERSION, "state_sha256": sha256_file(directory / STATE_FILE)}
    write_json_atomically(directory / META_FILE, meta)


def read_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {META_FILE} (incomplete checkpoint)")
    return json.loads(path.read_text())


def verify(directory: str | Path) -> dict[str, Any]:
    """Return the meta of a complete checkpoint whose state hash matches; raise otherwise."""
    meta = read_meta(directory)
    state = Path(directory) / STATE_FILE
    if not state.is_file() or sha256_file(state) != meta.get("state_sha256"):
        raise CheckpointError(f"{directory}: {STATE_FILE} is missing or does not match its sha256")
    return meta


def load(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    meta = verify(directory)
    state = torch.load(Path(directory) / STATE_FILE, map_location=map_location, weights_only=True)
    return state, meta


@dataclass
class Found:
    """A complete checkpoint: `path` a local directory to load from (a download, for an object store), `location`
    where it lives."""

    path: Path
    meta: dict[str, Any]
    location: Any = None  # storage.Location


def newest_name(run_dir: Any) -> str | None:
    """The name of the newest checkpoint directory under a run directory, complete or not (a listing, no reads)."""
    from genforge.training.storage import Location

    children = Location.parse(run_dir).children(PREFIX)
    return children[-1].name if children else None


def latest(run_dir: Any) -> Found | None:
    """The newest verified checkpoint under a Ray run directory (a path, a URI or a storage.Location); corrupt
    ones are skipped with a warning."""
    from genforge.training.storage import Location

    run_dir = Location.parse(run_dir)
    for location in reversed(run_dir.children(PREFIX)):
        local = None
        try:
            local = location.materialize()
            return Found(local, verify(local), location)
        except (CheckpointError, OSError) as exc:
            reason = str(exc).replace(f"{local}: ", "") if local else str(exc)
            warnings.warn(f"skipping checkpoint {location}: {reason}", stacklevel=2)
            if local is not None and not location.is_local:
                shutil.rmtree(local, ignore_errors=True)  # a download of a checkpoint that is not complete
    return None


RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's list of the run's reported checkpoints


def remove_partial(run_dir: Any) -> list[str]:
    """Delete checkpoint directories a crash left incomplete (no meta, or a state that fails its sha256).

    Directories Ray's snapshot still lists are kept: Ray refuses to start when one it knows is missing, and
    restoring from it falls back to the newest complete one (worker.py). Returns what was removed."""
    from genforge.training.storage import Location

    run_dir = Location.parse(run_dir)
    snapshot = run_dir / RAY_SNAPSHOT
    known = snapshot.read_text() if snapshot.is_file() else ""
    removed = []
    for location in run_dir.children(PREFIX):
        local = location.materialize()
        try:
            verify(local)
        except (CheckpointError, OSError):
            if location.name not in known:
                location.remove_tree()
                removed.append(str(location))
        finally:
            if not location.is_local:
                shutil.rmtree(local, ignore_errors=True)
    return removed
