"""Training throughput (images/s) of the DCGAN (pipelines/gan-sweep.yaml) and the VAE (pipelines/quickstart.yaml)
on mnist5k (28x28): genforge on Ray Train against a bare PyTorch loop over the same modules, batch and threads.

- Bare loop: `build_models` for the spec, Adam as the trainer sets it up, the same step math (GAN: one D update on
  real and detached fake images through the spec's DiffAugment policy, one G update through D, the spec's loss;
  VAE: loss = recon + beta * KL, backward, step) on batches drawn by `Split.batch` from a random order: what a
  user writes by hand. No EMA, no gradient-norm check, no metrics: that is the overhead being measured.
- genforge without Ray: `trainer_class(pattern)(modules, spec, cpu, identity).step` in this process (the
  trainer's own overhead: BufferGuard, finite-gradient check, EMA, metrics).
- genforge on Ray Train: `genforge.training.driver.train` (the path of `genforge train`, without the final model
  export), with `train_loop_per_worker` instrumented (benchmarks/throughput_probe.py).

Steady state is images/s over windows of 10 consecutive steps (from the start of one step to the start of the
step 10 later: batch, step, tick and bookkeeping included), inside epochs (a window never spans an epoch end),
after the first 10 steps. The 1-worker ratio is genforge's median window over the bare loop's at the thread count
and niceness a Ray worker runs with (read back from the worker: Ray starts workers at nice 15), its windows taken
before and after the Ray runs; scaling efficiency is images/s with two workers (the per-worker batch fixed, one
thread each) over twice that of one worker. Start-up (from the `train()` call to rank 0's first step) and the
epoch-end work are reported on their own, and every figure notes the cores its process(es) got and how busy the
machine was meanwhile (/proc/stat): on a shared 2-core machine the others' load is part of the number.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from benchmarks.report import Entry
from benchmarks.timing import Stats, quotient_of_medians, window_rates

FAMILY = "throughput"
ROOT = Path(__file__).resolve().parents[1]
SPECS = {"gan": ROOT / "pipelines" / "gan-sweep.yaml", "vae": ROOT / "pipelines" / "quickstart.yaml"}
WINDOW = 10  # steps per throughput window
WARMUP = 10  # first steps of a run left out of steady state
BATCH = 64  # per worker


def spec_for(kind: str, workers: int, tmp: Path, steps: int, epochs: int, tag: str) -> Any:
    """The shipped spec's data and model, trained as `genforge train` would, bounded to `steps` per epoch."""
    from genforge.config import spec_from_dict

    tree = yaml.safe_load(SPECS[kind].read_text())
    tree.update(name=f"bench-{kind}-{workers}w-{tag}", stages=["train"])
    # One CPU (one thread) per worker whatever the spec asks: the comparisons below fix the thread count.
    tree["train"] = {**tree.get("train", {}), "workers": workers, "cpus_per_worker": 1, "batch_size": BATCH * workers,
                     "epochs": epochs, "max_steps_per_epoch": steps, "log_every_steps": WINDOW,
                     "checkpoint_every": epochs, "storage_path": str(tmp / "runs")}
    tree["tracking"] = {"uri": f"sqlite:///{tmp / 'mlflow.db'}"}
    tree.get("evaluate", {}).pop("every_epochs", None)
    return spec_from_dict(tree)


def steady_rates(record: dict[str, Any], images_per_step: int) -> list[float]:
    """Rank 0's steady-state windows: consecutive step starts inside one epoch, past the warm-up."""
    starts, ends = record["step_starts"], set(record["epoch_ends"])
    rates: list[float] = []
    segment: list[float] = []
    for i, t in enumerate(starts):
        if i in ends and segment:  # step i is the first of a new epoch
            rates += window_rates(segment, images_per_step, WINDOW)
            segment = []
        if i >= WARMUP:
            segment.append(t)
    return rates + window_rates(segment, images_per_step, WINDOW)


def genforge_run(spec: Any, out: Path, profile: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    """Train with the instrumented worker loop; the ranks' records, the driver's wall time and MLflow's rows."""
    import ray.cloudpickle
    from mlflow import MlflowClient

    from benchmarks import throughput_probe
    from genforge.training import driver, worker

    ray.cloudpickle.register_pickle_by_value(throughput_probe)
    out.mkdir(parents=True, exist_ok=True)
    original = worker.train_loop_per_worker
    worker.train_loop_per_worker = throughput_probe.instrumented_loop(str(out), *profile)
    lines: list[str] = []
    t0_wall = time.time()
    try:
        result = driver.train(spec, echo=lines.append, finalize=False)
    finally:
        worker.train_loop_per_worker = original
    wall = time.time() - t0_wall
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    history = MlflowClient(result.tracking_uri).get_metric_history(result.run_id, "images_per_s")
    return {"wall_s": wall, "t0_wall": t0_wall, "ranks": ranks, "lines": lines, "run_id": result.run_id,
            "mlflow_images_per_s": [m.value for m in sorted(history, key=lambda m: m.step)]}


def bare_step(kind: str, modules: dict[str, torch.nn.Module], spec: Any) -> Callable:
    """The hand-written step over the same modules (see the module docstring)."""
    if kind == "vae":
        vae = modules["vae"]
        opt = torch.optim.Adam(vae.parameters(), lr=spec.train.lr)

        def vae_step(x, y):
            loss = vae(x, None).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return vae_step
    from genforge.models.diffaugment import diff_augment
    from genforge.models.gan import d_loss, g_loss

    G, D, m = modules["G"], modules["D"], spec.model
    opt_g = torch.optim.Adam(G.parameters(), lr=spec.train.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=spec.train.lr_d or spec.train.lr, betas=(0.5, 0.999))

    def gan_step(x, y):
        n = x.shape[0]
        with torch.no_grad():
            fake = G(torch.randn(n, m.latent_dim), None)
        logits = D(diff_augment(torch.cat([x * 2.0 - 1.0, fake]), m.diffaugment), None)
        loss_d = d_loss(logits[:n], logits[n:], m.gan_loss)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = g_loss(D(diff_augment(G(torch.randn(n, m.latent_dim), None), m.diffaugment), None), m.gan_loss)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

    return gan_step


def local_rates(kind: str, spec: Any, batch: int, steps: int, threads: int, genforge_trainer: bool,
                nice: int | None = None) -> tuple[list[float], dict[str, float] | None]:
    """Steady-state windows of the bare loop (or genforge's trainer without Ray) in this process, and the cores it
    and the machine used meanwhile. With `nice`, the loop runs in a thread of that niceness (Linux: per thread),
    as a Ray worker does (Ray starts workers at RAY_worker_niceness, 15 by default): then load from other
    processes slows both sides alike."""
    from genforge.data import load_dataset
    from genforge.models import build_models, get_family
    from genforge.training.trainer import trainer_class

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = load_dataset(spec.data)
        torch.manual_seed(spec.train.seed)
        modules = build_models(spec.model, data.image_shape, data.num_classes)
        if genforge_trainer:
            trainer = trainer_class(get_family(spec.model.family).pattern)(modules, spec, torch.device("cpu"),
                                                                           lambda module: module)
            trainer.total_steps = WARMUP + steps + 1  # the loop's length: where a cosine schedule (quickstart) ends
            step = trainer.step
        else:
            step = bare_step(kind, modules, spec)
        loop = lambda: _timed_loop(step, data.train, batch, steps)  # noqa: E731
        return loop() if nice is None else _in_thread_at_nice(loop, nice)
    finally:
        torch.set_num_threads(previous)


def _timed_loop(step: Callable, split: Any, batch: int, steps: int) -> tuple[list[float], dict[str, float] | None]:
    from benchmarks.throughput_probe import cpu_snapshot, cpu_window

    order = torch.randperm(len(split))
    per_epoch = len(split) // batch
    stamps, first = [], None
    for i in range(WARMUP + steps + 1):
        stamps.append(time.perf_counter())
        if i == WARMUP:
            first = cpu_snapshot()
        b = i % per_epoch
        x, y = split.batch(order[b * batch:(b + 1) * batch])
        step(x, y)
    return window_rates(stamps[WARMUP:], batch, WINDOW), cpu_window(first, cpu_snapshot())


def _in_thread_at_nice(fn: Callable[[], Any], nice: int) -> Any:
    """fn() in a new thread whose niceness is raised to `nice` (never lowered: that would need privileges)."""
    import os
    import threading

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            tid = threading.get_native_id()
            current = os.getpriority(os.PRIO_PROCESS, tid)
            if nice > current:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="bench-bare-loop")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


PHASE_ORDER = ("set_up", "restore", "attach_io", "batch", "step", "tick", "end_epoch", "write_checkpoint", "report")


def phase_rows(label: str, run: dict[str, Any]) -> list[str]:
    """Markdown rows: where each rank's time in the worker went, in seconds and as a share of its loop."""
    rows = []
    for r in run["ranks"]:
        total = r["loop_seconds"]
        parts = {k: r["phases"].get(k, 0.0) for k in PHASE_ORDER}
        parts["other"] = total - sum(parts.values())
        cells = " | ".join(f"{v:.2f} ({100 * v / total:.0f}%)" for v in parts.values())
        rows.append(f"| {label} rank {r['rank']} | {total:.1f} | {cells} |")
    return rows


def summarize_runs(runs: list[dict[str, Any]], global_batch: int) -> dict[str, Any]:
    """Steady-state windows (pooled over the fits), start-up, the in-loop and end-to-end rates, CPU use."""
    acc: dict[str, list[float]] = {"steady": [], "startup_s": [], "ray_start_s": [], "in_loop_img_s": [],
                                   "end_to_end_img_s": [], "mlflow": [], "cpu_ms_per_img": [],
                                   "thread_cpu_ms_per_img": [], "loop_cores": []}
    for run in runs:
        r0 = next(r for r in run["ranks"] if r["rank"] == 0)
        steps, before_first = len(r0["step_starts"]), r0["first_step_after_s"] or 0.0
        windows = steady_rates(r0, global_batch)
        acc["steady"] += windows
        acc["startup_s"].append(r0["entered_wall"] + before_first - run["t0_wall"])
        acc["ray_start_s"].append(r0["entered_wall"] - run["t0_wall"])
        acc["in_loop_img_s"].append(steps * global_batch / max(r0["loop_seconds"] - before_first, 1e-9))
        acc["end_to_end_img_s"].append(steps * global_batch / run["wall_s"])
        acc["mlflow"] += run["mlflow_images_per_s"][1:]
        cpu = [r.get("cpu") for r in run["ranks"]]
        if windows and all(cpu):
            rate = Stats.of(windows).median
            acc["cpu_ms_per_img"].append(1000 * sum(c["process_cores"] for c in cpu) / rate)
            acc["thread_cpu_ms_per_img"].append(1000 * sum(c.get("thread_cores", 0.0) for c in cpu) / rate)
            acc["loop_cores"].append(sum(c.get("thread_cores", 0.0) for c in cpu))
    out: dict[str, Any] = {k: Stats.of(v) for k, v in acc.items()}
    ranks = [r for run in runs for r in run["ranks"]]
    out["threads"] = sorted({r["threads"] for r in ranks})
    out["nice"] = sorted({r.get("nice") for r in ranks})
    out["cpu"] = _cpu_text([r.get("cpu") for r in sorted(runs[0]["ranks"], key=lambda r: r["rank"])])
    return out


def _cpu_text(windows: list[dict[str, float] | None]) -> str:
    """'a+b cores in the training process(es), c busy machine-wide (others c-a-b)' over the steady steps."""
    if not windows or any(w is None for w in windows):
        return "CPU use not recorded"
    mine = [w["process_cores"] for w in windows]
    loop = [w.get("thread_cores", float("nan")) for w in windows]
    machine = windows[0]["machine_busy_cores"]
    return (f"over the steady steps {'+'.join(f'{c:.2f}' for c in mine)} cores in the training process(es) "
            f"({'+'.join(f'{c:.2f}' for c in loop)} in the training thread), {machine:.2f} busy machine-wide "
            f"(others {max(machine - sum(mine), 0.0):.2f})")


RAY_WORKER_NICENESS = 15  # Ray's default (RAY_worker_niceness); read back from the workers and checked


def _measure_family(kind: str, tmp: Path, steps: int, epochs: int, local_steps: int) -> tuple[dict, dict, dict]:
    """With Ray up, alternate: bare loop, 1-worker fit, bare, 2-worker fit, bare, 1-worker fit, bare (so that slow
    drift on a shared machine hits every side alike); then, Ray shut down, genforge's trainer without Ray and the bare
    loop on two threads. The one-thread bare loop runs at the workers' niceness; thread count and niceness are checked
    against what the workers report (a mismatch is noted)."""
    import ray

    from genforge.ray_runtime import ensure_ray

    tag = time.strftime("%H%M%S")
    spec = spec_for(kind, 1, tmp, steps, epochs, tag)
    ensure_ray(spec)
    segment = max(local_steps // 4, 2 * WINDOW)
    bare_rates: list[float] = []
    bare_cpu: list[dict[str, float]] = []
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for i, workers in enumerate((1, 2, 1, None)):
        rates, window = local_rates(kind, spec, BATCH, segment, 1, False, RAY_WORKER_NICENESS)
        bare_rates += rates
        bare_cpu += [window] if window else []
        if workers:
            fit_spec = spec_for(kind, workers, tmp, steps, epochs, f"{tag}-{i}")
            runs[workers].append(genforge_run(fit_spec, tmp / f"{kind}-{workers}w-{i}"))
    ray.shutdown()
    sums = {w: summarize_runs(runs[w], BATCH * w) for w in runs}
    threads, nice = sums[1]["threads"][0], sums[1]["nice"][0]
    bare = Stats.of(bare_rates)
    local: dict[str, Any] = {
        "bare": bare, "nice": nice,
        "bare_cpu_ms_per_img": (1000 * Stats.of([c["process_cores"] for c in bare_cpu]).median / bare.median
                                if bare_cpu else float("nan")),
        "bare_thread_cpu_ms_per_img": (1000 * Stats.of([c["thread_cores"] for c in bare_cpu]).median / bare.median
                                       if bare_cpu else float("nan")),
        "mismatch": "" if (threads, nice) == (1, RAY_WORKER_NICENESS) else
        f"; NOTE: the workers ran {threads} thread(s) at nice {nice}, the bare loop 1 at {RAY_WORKER_NICENESS}",
    }
    cpu = {"bare": _cpu_text(bare_cpu[:1])}
    for name, batch, steps_, threads_, trainer, nice_ in (
        ("trainer", BATCH, local_steps, threads, True, nice),
        ("bare_2threads_2x_batch", 2 * BATCH, local_steps // 2, 2, False, None),
    ):
        rates, window = local_rates(kind, spec, batch, max(steps_, WINDOW), threads_, trainer, nice_)
        local[name], cpu[name] = Stats.of(rates), _cpu_text([window])
    local["cpu"] = cpu
    return runs, sums, local


def _entries(kind: str, sums: dict, local: dict) -> list[Entry]:
    label = {"gan": "DCGAN (gan-sweep.yaml)", "vae": "VAE (quickstart.yaml)"}[kind]
    one, two, bare = sums[1]["steady"], sums[2]["steady"], local["bare"]
    ratio, ratio_range = quotient_of_medians(one, bare)
    eff = two.median / (2 * one.median) if one.median else float("nan")
    eff_range = {"low": two.q1 / (2 * one.q3), "high": two.q3 / (2 * one.q1)}
    cores1, cores2 = sums[1]["loop_cores"].median, sums[2]["loop_cores"].median
    cpu_eff = eff / (cores2 / (2 * cores1)) if cores1 and cores2 else float("nan")
    threads, fits = sums[1]["threads"], sums[1]["startup_s"].n
    cpu_ratio = local["bare_cpu_ms_per_img"] / sums[1]["cpu_ms_per_img"].median
    thread_ratio = local["bare_thread_cpu_ms_per_img"] / sums[1]["thread_cpu_ms_per_img"].median
    e = [
        Entry(f"train_{kind}_bare_loop", bare.median, "img/s", family=FAMILY, spread=bare.spread(), repeats=bare.n,
              note=f"{label}; batch {BATCH}, 1 thread, plain PyTorch, nice {RAY_WORKER_NICENESS} like a Ray worker, "
                   f"4 segments around the fits; {local['cpu']['bare']}{local['mismatch']}"),
        Entry(f"train_{kind}_trainer_no_ray", local["trainer"].median, "img/s", family=FAMILY,
              spread=local["trainer"].spread(), repeats=local["trainer"].n,
              note=f"genforge's trainer.step in-process, no Ray, same batch, threads and niceness; "
                   f"{local['cpu']['trainer']}"),
        Entry(f"train_{kind}_ray_1worker", one.median, "img/s", family=FAMILY, spread=one.spread(), repeats=one.n,
              note=f"steady state, rank 0 windows of {WINDOW} steps pooled over {fits} fits; worker threads {threads}, "
                   f"nice {sums[1]['nice']}; {sums[1]['cpu']}"),
        Entry(f"train_{kind}_ray_1worker_vs_bare", ratio, "ratio", ">= 0.95", family=FAMILY, spread=ratio_range,
              repeats=min(one.n, bare.n),
              note=f"median window / median window (range q1/q3 .. q3/q1); the same ratio in CPU time per image: "
                   f"{cpu_ratio:.2f} (whole process), {thread_ratio:.2f} (training thread only)"),
        Entry(f"train_{kind}_ray_2workers", two.median, "img/s", family=FAMILY, spread=two.spread(), repeats=two.n,
              note=f"global batch {2 * BATCH} ({BATCH} per worker), threads {sums[2]['threads']}; {sums[2]['cpu']}"),
        Entry(f"train_{kind}_scaling_efficiency_2workers", eff, "ratio", ">= 0.85", family=FAMILY, spread=eff_range,
              repeats=min(one.n, two.n),
              note=f"2-worker img/s / (2 x 1-worker img/s), same per-worker batch; the training threads got "
                   f"{cores2:.2f} cores with 2 workers vs 2 x {cores1:.2f} with 1: per core of CPU the efficiency is "
                   f"{cpu_eff:.2f}"),
        Entry(f"train_{kind}_bare_2threads", local["bare_2threads_2x_batch"].median, "img/s", family=FAMILY,
              spread=local["bare_2threads_2x_batch"].spread(), repeats=local["bare_2threads_2x_batch"].n,
              note=f"one process on both cores (nice 0), batch {2 * BATCH}: the alternative to 2 workers; "
                   f"{local['cpu']['bare_2threads_2x_batch']}"),
        Entry(f"train_{kind}_startup_1worker", sums[1]["startup_s"].median, "s", family=FAMILY,
              spread=sums[1]["startup_s"].spread(), repeats=fits,
              note=f"train() call to rank 0's first step (Ray workers entered after {sums[1]['ray_start_s'].median:.1f}"
                   f" s); 2 workers {sums[2]['startup_s'].median:.1f} s"),
    ]
    for w in (1, 2):
        s = sums[w]
        e.append(Entry(f"train_{kind}_ray_{w}worker{'s' if w > 1 else ''}_whole_loop", s["in_loop_img_s"].median,
                       "img/s", family=FAMILY, repeats=s["in_loop_img_s"].n,
                       note=f"first step to loop end incl. epoch-end eval, grids, checkpoints; end to end incl. "
                            f"start-up {s['end_to_end_img_s'].median:.0f} img/s; MLflow images_per_s median "
                            f"{s['mlflow'].median:.0f}"))
    return e


def profile_run(kind: str, workers: int, tmp: Path, out_dir: Path, steps: int, epochs: int) -> list[Path]:
    """One more fit with torch.profiler over 10 steady steps and cProfile over the loop of rank 0; the tables are
    copied to out_dir as profile_<kind>_<workers>w_{torch,cprofile}.txt."""
    import ray

    spec = spec_for(kind, workers, tmp, steps, epochs, "profile" + time.strftime("%H%M%S"))
    where = tmp / f"{kind}-{workers}w-profile"
    genforge_run(spec, where, profile=(WARMUP + 10, 10))
    ray.shutdown()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for source, label in (("torch_profile_rank0.txt", "torch"), ("cprofile_rank0.txt", "cprofile")):
        if (where / source).is_file():
            target = out_dir / f"profile_{kind}_{workers}w_{label}.txt"
            target.write_text((where / source).read_text())
            written.append(target)
    return written


def run(steps: int = 45, epochs: int = 2, local_steps: int = 50, kinds: tuple[str, ...] = ("gan", "vae"),
        profile: bool = False, profile_dir: Path | None = None) -> tuple[list[Entry], str]:
    """Entries for each kind, and a markdown table of where the workers' time went (with `profile`, also the
    profiler tables of a 2-worker GAN run in profile_dir)."""
    entries: list[Entry] = []
    rows = ["| run | loop s | " + " | ".join(PHASE_ORDER) + " | other |", "|---" * (len(PHASE_ORDER) + 3) + "|"]
    with tempfile.TemporaryDirectory(prefix="genforge-bench-throughput-") as tmp_name:
        tmp = Path(tmp_name)
        for kind in kinds:
            runs, sums, local = _measure_family(kind, tmp, steps, epochs, local_steps)
            entries += _entries(kind, sums, local)
            for w, fits in runs.items():
                for i, run_record in enumerate(fits):
                    rows += phase_rows(f"{kind} {w}w fit {i + 1}", run_record)
        if profile and profile_dir is not None:
            for path in profile_run("gan", 2, tmp, profile_dir, max(steps, 2 * WARMUP + 10), 1):
                rows.append(f"\nProfile table: `{path.name}`")
    details = ("Where the workers' time goes (seconds in `train_loop_per_worker` per phase, share of the loop; "
               f"{epochs} epochs of up to {steps} steps, batch {BATCH} per worker; `report` excludes the checkpoint's "
               "own report):\n\n" + "\n".join(rows) + "\n")
    return entries, details
