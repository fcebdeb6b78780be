"""The platform's own model artifact: safetensors weights + the resolved spec + a sha256 manifest.

Loading never unpickles: weights come from safetensors, the spec from YAML (safe_load), and every
file is checked against the manifest's sha256 before it is read. This is what `genforge` itself
loads; the MLflow pt2 model beside it serves other tools.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from genforge.config import Spec
from genforge.models import build_models, get_family
from genforge.sampling import class_cycle, draw
from genforge.training.checkpoint import sha256_file

FORMAT = "genforge-model/1"
WEIGHTS, SPEC, MANIFEST = "weights.safetensors", "spec.yaml", "manifest.json"


class ArtifactError(ValueError):
    pass


@dataclass
class LoadedModel:
    spec: Spec
    modules: dict[str, nn.Module]
    sampler: nn.Module  # z (and y) -> images in [0, 1], eval mode
    manifest: dict[str, Any]

    @property
    def latent_dim(self) -> int:
        return int(self.manifest["latent_dim"])

    @property
    def num_classes(self) -> int:
        return int(self.manifest["num_classes"])

    def generate(self, n: int, labels: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
        """n images in [0, 1]; conditional models draw `labels` (default: the classes in turn)."""
        if self.manifest["conditional"] and labels is None:
            labels = class_cycle(n, self.num_classes)
        return draw(
            self.sampler, self.latent_dim, n, seed=seed, labels=labels if self.manifest["conditional"] else None
        )


def sampler_facts(spec: Spec, image_shape: tuple[int, int, int], num_classes: int) -> dict[str, Any]:
    """What a consumer needs to call the sampler: also the MLflow model's metadata."""
    family = get_family(spec.model.family)
    return {
        "family": family.name,
        "conditional": family.conditional,
        "latent_dim": spec.model.latent_dim,
        "num_classes": num_classes,
        "image_shape": list(image_shape),
        "value_range": [0.0, 1.0],
        "dataset": spec.data.dataset,
    }


def save(directory: str | Path, spec: Spec, modules: dict[str, nn.Module], facts: dict[str, Any]) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"{name}.{key}": t.detach().cpu().contiguous()
        for name, m in modules.items()
        for key, t in m.state_dict().items()
    }
    save_file(tensors, directory / WEIGHTS)
    (directory / SPEC).write_text(yaml.safe_dump(spec.model_dump(mode="json", by_alias=True), sort_keys=False))
    manifest = {
        "format": FORMAT,
        "modules": sorted(modules),
        **facts,
        "sha256": {name: sha256_file(directory / name) for name in (WEIGHTS, SPEC)},
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return directory


def load(directory: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{directory}: not a genforge model ({MANIFEST}: {exc})") from None
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{directory}: unsupported model format {manifest.get('format')!r}")
    for name, digest in manifest["sha256"].items():
        if not (directory / name).is_file() or sha256_file(directory / name) != digest:
            raise ArtifactError(f"{directory / name}: missing or sha256 mismatch; refusing to load")
    spec = Spec.model_validate(yaml.safe_load((directory / SPEC).read_text()))
    modules = build_models(spec.model, tuple(manifest["image_shape"]), int(manifest["num_classes"]))
    tensors = load_file(directory / WEIGHTS, device=str(device))
    for name in manifest["modules"]:
        prefix = name + "."
        modules[name].load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    for m in modules.values():
        m.to(device).eval()
    sampler = get_family(spec.model.family).sampler(modules).eval()
    return LoadedModel(spec, modules, sampler, manifest)
