"""Evaluation speed on mnist5k (28x28): domain-feature extraction images/s, and the default protocol (10,000
samples x 3 draws, domain features; every metric: FID and KID per draw, precision/recall (Kynkäänniemi et al.
2019), density/coverage (Naeem et al. 2020), IS analogue, diversity, the floor, and for a VAE reconstruction and
the importance-weighted NLL with k = 64) timed two ways:

- in-process: `genforge.evaluator.metrics.evaluate_model` on a VAE of the quickstart's shape, with the extractor
  and reference statistics already cached (what every evaluation after the first pays); per-phase seconds in the
  note;
- end to end: `genforge evaluate --run RUN --samples 10000 --seeds 3` on the demo's trained run, a fresh process
  (imports, MLflow, model loading, logging the report included).

Preparing a cold cache (training the domain classifier, the reference statistics) is reported on its own.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from benchmarks.report import Entry
from benchmarks.subproc import run_genforge
from benchmarks.timing import Stats, time_call

FAMILY = "evaluation"
CLI_FAMILY = "evaluation_cli"  # its own family: `--only evaluation` (no demo, so no trained run) keeps its entry


def _setup(samples: int, seeds: int) -> dict[str, Any]:
    from genforge.artifacts import LoadedModel, sampler_facts
    from genforge.config import spec_from_dict
    from genforge.data import load_dataset
    from genforge.evaluator.extractors import get_extractor
    from genforge.evaluator.reference import reference
    from genforge.models import build_models, get_family

    spec = spec_from_dict({"name": "bench", "data": {"dataset": "mnist5k"},
                           "model": {"family": "vae", "latent_dim": 16, "width": 32},
                           "evaluate": {"samples": samples, "seeds": seeds}})
    data = load_dataset(spec.data)
    torch.manual_seed(0)
    modules = build_models(spec.model, data.image_shape, data.num_classes)
    for m in modules.values():
        m.eval()
    model = LoadedModel(spec, modules, get_family("vae").sampler(modules).eval(),
                        sampler_facts(spec, data.image_shape, data.num_classes))
    prepare_s, (extractor, info) = time_call(lambda: get_extractor(spec.evaluate, data, echo=lambda m: None))
    prepare_s += time_call(lambda: reference(extractor, data, spec.evaluate.reference_split))[0]
    return {"spec": spec, "data": data, "model": model, "extractor": extractor, "info": info, "prepare_s": prepare_s}


def extraction_rate(extractor: Any, data: Any, n: int, repeats: int) -> Stats:
    """Images/s of `features_and_probs` (what evaluation calls) on n real training images (tiled)."""
    x, _ = data.train.batch(torch.arange(len(data.train)))
    images = x.repeat((n + len(x) - 1) // len(x), 1, 1, 1)[:n].contiguous()
    extractor.features_and_probs(images[:1000])  # warm-up
    return Stats.of([n / time_call(lambda: extractor.features_and_probs(images))[0] for _ in range(repeats)])


def run(samples: int = 10000, seeds: int = 3, repeats: int = 3, eval_repeats: int = 1) -> list[Entry]:
    """Extraction rate, cold preparation and the in-process default-protocol evaluation."""
    from genforge.evaluator.metrics import evaluate_model

    s = _setup(samples, seeds)
    rate = extraction_rate(s["extractor"], s["data"], samples, repeats)
    entries = [
        Entry("domain_features_rate", rate.median, "img/s", family=FAMILY, spread=rate.spread(), repeats=rate.n,
              note=f"features and class probabilities of {samples} 28x28 images, {torch.get_num_threads()} threads"),
        Entry("evaluation_cache_preparation", s["prepare_s"], "s", family=FAMILY, repeats=1,
              note="domain classifier and reference statistics; ~0 when already cached"),
    ]
    times, timings = [], {}
    for _ in range(eval_repeats):
        t0 = time.perf_counter()
        report = evaluate_model(s["model"], s["data"], s["spec"].evaluate, s["extractor"], s["info"],
                                echo=lambda m: None)
        times.append(time.perf_counter() - t0)
        timings = report.timings_s
    t = Stats.of(times)
    parts = ", ".join(f"{k} {v:.1f}" for k, v in timings.items() if k != "total")
    entries.append(Entry("evaluate_default_protocol_in_process", t.median, "s", "<= 60", family=FAMILY,
                         spread=t.spread() if t.n > 1 else None, repeats=t.n,
                         note=f"{samples} samples x {seeds} draws, VAE, warm cache; seconds: {parts}"))
    return entries


def run_cli(context: Any, samples: int = 10000, seeds: int = 3, timeout_s: float = 600) -> list[Entry]:
    """`genforge evaluate` of the demo's run under the default protocol, in a fresh process."""
    name = "evaluate_default_protocol_cli"
    if context is None or not context.run_id:
        return [Entry(name, None, "s", "<= 60", family=CLI_FAMILY,
                      note="needs the demo's trained run (the demo did not run or failed)")]
    args = ["evaluate", "--run", context.run_id, "--samples", str(samples), "--seeds", str(seeds), "--json"]
    if context.tracking_uri:
        args += ["--tracking-uri", context.tracking_uri]
    result = run_genforge(args, cwd=context.cwd, env=context.env, timeout_s=timeout_s)
    if result.returncode != 0:
        return [Entry(name, None, "s", "<= 60", family=CLI_FAMILY, note=f"failed: {result.tail(3)[:300]}")]
    timings = (result.result or {}).get("timings_s", {})
    parts = ", ".join(f"{k} {v:.1f}" for k, v in timings.items() if k != "total")
    return [Entry(name, result.wall_s, "s", "<= 60", family=CLI_FAMILY, repeats=1,
                  note=f"`genforge evaluate --run RUN --samples {samples} --seeds {seeds}` on the demo's model, wall "
                       f"time of the command; inside: {parts}")]
