"""The cheap in-loop metric: domain FID of a few thousand samples, computed by rank 0 at epoch end.

The extractor and the real statistics are prepared (and cached) by the driver before workers start, and travel
to the workers as bytes inside the run's config (through Ray's object store): on a cluster, rank 0 may run on a
node that does not share the driver's disk, so it never reads the driver's cache paths.
Samples come from a private seeded generator, so evaluating never moves the
training RNG: a run with in-loop evaluation trains exactly like one without.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation import FeatureStats, frechet_distance
from genforge.sampling import class_cycle, draw


def prepare(spec, data, echo=print) -> dict[str, Any] | None:
    """Driver side: make sure extractor and reference exist; return what workers need to load them."""
    if not spec.evaluate.every_epochs:
        return None
    from genforge.evaluator.extractors import domain_extractor, domain_files
    from genforge.evaluator.reference import reference

    extractor, meta, path = domain_extractor(data, spec.evaluate.extractor_epochs, echo)
    ref = reference(extractor, data, spec.evaluate.reference_split)
    return {"extractor_files": domain_files(path), "reference_npz": Path(ref.path).read_bytes()}


class InLoopFID:
    def __init__(self, paths: dict[str, Any], spec, num_classes: int, conditional: bool, device: torch.device) -> None:
        import io

        from genforge.evaluator.extractors import domain_from_files

        with torch.random.fork_rng(devices=[]):  # building the network draws init weights: keep training's RNG
            self.extractor, _ = domain_from_files(paths["extractor_files"], device)
        with np.load(io.BytesIO(paths["reference_npz"]), allow_pickle=False) as z:
            self.stats = FeatureStats.from_dict(z)
        self.n, self.seed = spec.evaluate.inloop_samples, spec.evaluate.seed
        self.latent_dim, self.num_classes = spec.model.latent_dim, num_classes
        self.conditional, self.device = conditional, device

    def __call__(self, sampler: torch.nn.Module) -> dict[str, float]:
        """`inloop_fid`, and `class_coverage` (the mode-collapse signal of training/health.py) from the same
        samples through the domain classifier."""
        from genforge.training.health import class_coverage

        labels = class_cycle(self.n, self.num_classes) if self.conditional else None
        images = draw(sampler, self.latent_dim, self.n, seed=self.seed, labels=labels, device=self.device)
        features, probs = self.extractor.features_and_probs(images)
        return {
            "inloop_fid": frechet_distance(self.stats, features),
            "class_coverage": class_coverage(torch.as_tensor(probs)),
        }
