"""Time every metric for 10,000 generated 28x28 samples with the domain extractor (one draw), and the
same with the full default protocol (3 draws), on mnist5k with a VAE of the quickstart's shape.

    python benchmarks/evaluate_speed.py [--samples 10000]

The domain extractor and the reference statistics are cached after the first run (GENFORGE_CACHE);
the script reports the warm times, which is what every evaluation after the first pays.
"""

from __future__ import annotations

import argparse
import time

import torch

from genforge.artifacts import LoadedModel, sampler_facts
from genforge.config import spec_from_dict
from genforge.data import load_dataset
from genforge.evaluator.extractors import get_extractor
from genforge.evaluator.metrics import evaluate_model
from genforge.evaluator.reference import reference
from genforge.models import build_models, get_family


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=10000)
    args = ap.parse_args()
    spec = spec_from_dict(
        {
            "name": "bench",
            "data": {"dataset": "mnist5k"},
            "model": {"family": "vae", "latent_dim": 16},
            "evaluate": {"samples": args.samples, "seeds": 1},
        }
    )
    data = load_dataset(spec.data)
    torch.manual_seed(0)
    modules = build_models(spec.model, data.image_shape, data.num_classes)
    for m in modules.values():
        m.eval()
    model = LoadedModel(
        spec,
        modules,
        get_family("vae").sampler(modules).eval(),
        sampler_facts(spec, data.image_shape, data.num_classes),
    )
    t = time.perf_counter()
    extractor, info = get_extractor(spec.evaluate, data, echo=print)
    reference(extractor, data, spec.evaluate.reference_split)
    print(f"extractor + reference (cold or cached): {time.perf_counter() - t:.1f} s")
    for seeds in (1, 3):
        cfg = spec.evaluate.model_copy(update={"seeds": seeds})
        t = time.perf_counter()
        report = evaluate_model(model, data, cfg, extractor, info, echo=lambda m: None)
        total = time.perf_counter() - t
        parts = ", ".join(f"{k} {v:.1f}" for k, v in report.timings_s.items() if k != "total")
        print(f"{args.samples} samples x {seeds} draw(s), all metrics: {total:.1f} s  ({parts})")


if __name__ == "__main__":
    main()
