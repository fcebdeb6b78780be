"""Run the benchmarks and write benchmarks/results/latest.json and latest.md.

    python -m benchmarks.run                      # the speed part (`make bench`): every family but quality
    python -m benchmarks.run --only quality       # the quality part (`make bench-quality`)
    python -m benchmarks.run --only frechet agreement --quick
    python -m benchmarks.run --only throughput --profile   # also torch.profiler and cProfile tables of rank 0

Families run in the order frechet, agreement, evaluation, throughput, demo, gpu (the CLI evaluation uses the demo's
trained run), each in this process except the demo, the CLI evaluation and the quality pipelines, which run the
`genforge` command. `--quick` shrinks every size (smoke test; its numbers are not the targets' conditions).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from benchmarks.report import RESULTS, Entry, print_table, write

SPEED = ("frechet", "agreement", "evaluation", "throughput", "demo", "gpu")
FAMILIES = (*SPEED, "quality")

FULL: dict[str, dict[str, Any]] = {
    "frechet": {"dim": 2048, "samples": 4096, "repeats": 3},
    "agreement": {"n": 10000, "dim": 128, "subsets": 100, "subset_size": 1000, "repeats": 3},
    "evaluation": {"samples": 10000, "seeds": 3, "repeats": 3, "eval_repeats": 1},
    "throughput": {"steps": 45, "epochs": 2, "local_steps": 50},
    "demo": {"timeout_s": 1200},
    "quality": {"samples": 5000},
}
QUICK: dict[str, dict[str, Any]] = {
    "frechet": {"dim": 64, "samples": 256, "repeats": 2},
    "agreement": {"n": 600, "dim": 16, "subsets": 10, "subset_size": 100, "repeats": 1},
    "evaluation": {"samples": 1000, "seeds": 1, "repeats": 1, "eval_repeats": 1},
    "throughput": {"steps": 12, "epochs": 2, "local_steps": 20},
    "demo": {"timeout_s": 900, "extra_args": ("--set", "tune.num_samples=2", "--set", "tune.max_epochs=1",
                                              "--set", "evaluate.samples=1000")},
    "quality": {"samples": 1000},
}


def _run_family(name: str, params: dict[str, Any], state: dict[str, Any], args: argparse.Namespace) -> list[Entry]:
    """One family's entries; the demo leaves its context in `state` for the CLI evaluation."""
    if name == "frechet":
        from benchmarks import frechet
        return frechet.run(**params)
    if name == "agreement":
        from benchmarks import agreement
        return agreement.run(**params)
    if name == "evaluation":
        from benchmarks import evaluate
        return evaluate.run(**params)
    if name == "throughput":
        from benchmarks import throughput
        entries, details = throughput.run(**params, profile=args.profile, profile_dir=args.out)
        state.setdefault("details", {})["throughput"] = details
        return entries
    if name == "demo":
        from benchmarks import demo
        entries, state["demo"] = demo.run(**params)
        return entries
    if name == "gpu":
        from benchmarks import gpu
        return gpu.run()
    if name == "quality":
        from benchmarks import quality
        return quality.run(**params, quick=args.quick)
    raise ValueError(name)


def _cli_evaluation(state: dict[str, Any], quick: bool) -> list[Entry]:
    from benchmarks import evaluate

    p = (QUICK if quick else FULL)["evaluation"]
    return evaluate.run_cli(state.get("demo"), samples=p["samples"], seeds=p["seeds"])


AGREEMENT_UNITS = ("relative", "absolute")  # agreement holds at any size; speed targets are for the full sizes


def _unjudged_in_quick(entries: list[Entry]) -> list[Entry]:
    """--quick sizes are not the targets' conditions: only agreement figures keep their verdict."""
    for e in entries:
        if e.target and e.unit not in AGREEMENT_UNITS:
            e.met, e.note = None, f"quick mode, not judged; {e.note}"
    return entries


def _guarded(name: str, fn: Callable[[], list[Entry]]) -> list[Entry]:
    """A family that crashes is one entry saying so; the others still run and are written."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported as an entry, with the traceback on stderr
        traceback.print_exc()
        return [Entry(f"{name}_failed", None, "", family=name, note=f"{type(exc).__name__}: {exc}"[:300])]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=FAMILIES, help="families to run (default: the speed part)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the harness")
    ap.add_argument("--profile", action="store_true", help="throughput: torch.profiler + cProfile tables of rank 0")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results directory (default benchmarks/results)")
    args = ap.parse_args(argv)
    families = [f for f in FAMILIES if f in (args.only or SPEED)]
    sizes = QUICK if args.quick else FULL
    cache = Path(tempfile.mkdtemp(prefix="genforge-bench-cache-"))
    previous_cache = os.environ.get("GENFORGE_CACHE")
    os.environ["GENFORGE_CACHE"] = str(cache)  # a cold extractor cache of our own (Ray workers inherit it)
    state: dict[str, Any] = {}
    entries: list[Entry] = []
    durations: dict[str, float] = {}
    t_all = time.perf_counter()
    try:
        for name in families:
            print(f"[bench] {name} ...", flush=True)
            t0 = time.perf_counter()
            got = _guarded(name, lambda n=name: _run_family(n, dict(sizes.get(n, {})), state, args))
            durations[name] = time.perf_counter() - t0
            if name == "demo" and "evaluation" in families:
                t1 = time.perf_counter()
                got += _guarded("evaluation_cli", lambda: _cli_evaluation(state, args.quick))
                durations["evaluation_cli"] = time.perf_counter() - t1
            if args.quick:
                got = _unjudged_in_quick(got)
            print(f"[bench] {name}: {durations[name]:.0f} s", flush=True)
            print_table(got)
            entries += got
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if previous_cache is None:
            os.environ.pop("GENFORGE_CACHE", None)
        else:
            os.environ["GENFORGE_CACHE"] = previous_cache
        if state.get("demo") is not None:
            shutil.rmtree(state["demo"].cwd, ignore_errors=True)
    ran = families + (["evaluation_cli"] if "evaluation_cli" in durations else [])
    write(entries, ran, args.out, mode="quick" if args.quick else "full", durations=durations,
          details=state.get("details"))
    missed = [e.name for e in entries if e.met is False]
    failed = [e.family for e in entries if e.name.endswith("_failed")]
    print(f"\n[bench] {len(entries)} figures in {time.perf_counter() - t_all:.0f} s -> {args.out / 'latest.json'}, "
          f"{args.out / 'latest.md'}")
    if failed:
        print(f"[bench] FAILED (traceback above): {', '.join(failed)}")
    print(f"[bench] MISSED: {', '.join(missed)}" if missed else "[bench] every figure with a target met it")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
