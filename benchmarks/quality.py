"""The quality part (`make bench-quality`): train the shipped specs end to end and record what their models score.

Each of pipelines/conditional.yaml, conditional-vae.yaml, gan-sweep.yaml and quickstart.yaml runs as `genforge run
SPEC --json --set evaluate.samples=5000` (so every FID ratio is taken at N = 5,000 samples per draw) in a fresh
directory, sharing one extractor cache; quickstart.yaml twice, as `make demo` runs it and as its base configuration
(`--set stages=[train, evaluate]`, what `genforge train` trains). The metrics are read by name from the run's
metrics in the command's JSON result (the MLflow run's metrics): `fid_ratio` (FID of the first n samples over the
FID of n real held-out images, same reference and extractor: evaluator/metrics.py), `cond_accuracy_min` (the domain
classifier's accuracy on the worst label, conditional models) and the importance-weighted NLL (`nll_iw_k<k>`, Burda
et al. 2016, nats, VAEs). A metric the run does not have is recorded as missing. Targets are the quality each
shipped spec promises (TARGETS: issue 10's), stricter than the spec's `promote.gates`, which are the floor below
which a model is never promoted; a metric without a TARGETS entry is held to its spec's gate.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks.report import Entry
from benchmarks.subproc import run_genforge

FAMILY = "quality"
ROOT = Path(__file__).resolve().parents[1]
# short name: (spec file, metrics recorded, --set overrides of the spec). The quickstart runs twice: as `make demo`
# (sweep, retrain) and as its base configuration, trained and evaluated without the sweep (what `genforge train`
# trains).
SPECS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "conditional": ("conditional.yaml", ("fid_ratio", "cond_accuracy_min", "recognisable"), ()),
    "conditional_vae": ("conditional-vae.yaml", ("fid_ratio", "cond_accuracy_min", "recognisable"), ()),
    "gan_sweep": ("gan-sweep.yaml", ("fid_ratio", "recognisable"), ()),
    "quickstart": ("quickstart.yaml", ("fid_ratio", "nll_iw", "recognisable"), ()),
    "quickstart_base": ("quickstart.yaml", ("fid_ratio", "nll_iw", "recognisable"), ("stages=[train, evaluate]",)),
}
# What each spec's model should reach (issue 10): the domain classifier is right on 99 % of real digits, a plain
# hand-made DCGAN reaches fid_ratio ~15 at N = 5,000, and 95 nats is a small convolutional VAE's binarised-MNIST NLL.
TARGETS = {
    "conditional": {"cond_accuracy_min": ">= 0.95"},
    "conditional_vae": {"cond_accuracy_min": ">= 0.95"},
    "gan_sweep": {"fid_ratio": "<= 5"},
    "quickstart": {"recognisable": ">= 0.8"},
    "quickstart_base": {"nll_iw": "<= 95"},
}
UNITS = {"fid_ratio": "ratio", "cond_accuracy_min": "accuracy", "nll_iw": "nats", "recognisable": "share"}


def gates(spec_file: Path) -> dict[str, str]:
    tree = yaml.safe_load(spec_file.read_text()) or {}
    return {k: " ".join(str(v).split()) for k, v in ((tree.get("promote") or {}).get("gates") or {}).items()}


def pick(metrics: dict[str, float], name: str) -> tuple[str | None, float | None]:
    """The metric `name`, or for `nll_iw` the first `nll_iw_k<k>`; (key, value) or (None, None)."""
    if name in metrics:
        return name, metrics[name]
    if name == "nll_iw":
        for key in sorted(metrics):
            if key.startswith("nll_iw_k"):
                return key, metrics[key]
    return None, None


def run_one(short: str, samples: int, cache: Path, timeout_s: float, extra: tuple[str, ...] = ()) -> list[Entry]:
    filename, wanted, sets = SPECS[short]
    spec_file = ROOT / "pipelines" / filename
    stages = tuple(a for s in sets for a in ("--set", s))
    with tempfile.TemporaryDirectory(prefix=f"genforge-bench-quality-{short}-") as tmp:
        result = run_genforge(["run", str(spec_file), "--json", "--set", f"evaluate.samples={samples}", *stages,
                               *extra],
                              cwd=Path(tmp), env={"GENFORGE_CACHE": str(cache)}, timeout_s=timeout_s)
    data: dict[str, Any] = result.result or {}
    metrics = data.get("metrics") or {}
    promotion = (data.get("promotion") or {}).get("reason", "")
    ok = result.returncode == 0
    status = "finished" if ok else f"failed ({'timeout' if result.returncode is None else result.returncode})"
    entries = [Entry(f"quality_{short}_pipeline_wall", result.wall_s, "s", family=FAMILY, repeats=1,
                     note=f"genforge run pipelines/{filename}{' '.join(('',) + stages)} {status}; "
                          f"promotion: {promotion[:160]}"
                          + ("" if ok else f"; last lines: {result.tail(3)[:300]}"))]
    targets = {**gates(spec_file), **TARGETS.get(short, {})}
    for name in wanted:
        key, value = pick(metrics, name)
        target = targets.get(name)
        note = f"{key}, evaluate.samples={samples}" if key else f"missing: no {name} in the run's metrics"
        entries.append(Entry(f"quality_{short}_{name}", value, UNITS[name], target, family=FAMILY,
                             repeats=1 if key else None, note=note))
    return entries


QUICK_SETS = {"conditional": ("train.epochs=1", "train.max_steps_per_epoch=10"),
              "conditional_vae": ("train.epochs=1", "train.max_steps_per_epoch=10"),
              "gan_sweep": ("tune.num_samples=2", "tune.max_epochs=1", "train.max_steps_per_epoch=10"),
              "quickstart": ("tune.num_samples=2", "tune.max_epochs=1", "train.max_steps_per_epoch=10"),
              "quickstart_base": ("train.epochs=1", "train.max_steps_per_epoch=10")}


def run(samples: int = 5000, timeout_s: float = 3600, only: tuple[str, ...] = tuple(SPECS),
        quick: bool = False) -> list[Entry]:
    """Every spec in `only`, one after the other; `quick` trains for a few steps (a smoke test of the harness)."""
    entries: list[Entry] = []
    with tempfile.TemporaryDirectory(prefix="genforge-bench-quality-cache-") as cache:
        for short in only:
            extra = tuple(a for s in QUICK_SETS[short] for a in ("--set", s)) if quick else ()
            entries += run_one(short, samples, Path(cache), timeout_s, extra)
    return entries
