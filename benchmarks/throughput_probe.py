"""What runs inside each Ray Train worker during the throughput benchmark: genforge's own
`train_loop_per_worker`, with timers around its phases.

The driver replaces `genforge.training.worker.train_loop_per_worker` by `instrumented_loop(out_dir)` for one fit
(the driver imports it by name when it builds the TorchTrainer). Inside the worker the wrapper times, per rank:
set-up (data, model, trainer), restore, rank 0's I/O attach, each batch fetch, each `trainer.step`, each tick
(the metric all-reduce, MLflow row and progress line), each epoch end (validation, grids, summary), each
checkpoint write and each plain `ray.train.report`, and it records the start of every step. The record goes to
`out_dir/rank<r>.json`. With `profile_steps`, rank 0 also runs torch.profiler over that many steady steps and
cProfile over the whole loop, and writes both tables beside it.

This module is pickled by value into the workers (`ray.cloudpickle.register_pickle_by_value`): it imports only
the standard library, torch and genforge.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

PHASES = ("_set_up", "_restore", "_attach_io", "_tick", "_end_epoch", "_write_checkpoint")
STEADY_FROM = 10  # the CPU accounting window starts at this step (the throughput windows' warm-up)


def cpu_snapshot() -> dict[str, float]:
    """Wall clock, CPU seconds of this process (all threads) and of the calling thread (the training loop's), and
    the machine's busy CPU seconds (/proc/stat). Call it from the training thread."""
    busy = float("nan")
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    except (OSError, ValueError, IndexError):
        pass
    return {"wall": time.perf_counter(), "process_cpu": time.process_time(), "thread_cpu": time.thread_time(),
            "machine_busy": busy}


def cpu_window(first: dict[str, float] | None, last: dict[str, float] | None) -> dict[str, float] | None:
    """Cores used over a window: by this process, by the training thread alone, and by the whole machine."""
    if not first or not last or last["wall"] <= first["wall"]:
        return None
    wall = last["wall"] - first["wall"]
    return {"wall_s": wall, "process_cores": (last["process_cpu"] - first["process_cpu"]) / wall,
            "thread_cores": (last["thread_cpu"] - first["thread_cpu"]) / wall,
            "machine_busy_cores": (last["machine_busy"] - first["machine_busy"]) / wall}


class _Recorder:
    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.step_starts: list[float] = []  # perf_counter at each trainer.step call
        self.step_seconds: list[float] = []
        self.epoch_ends: list[int] = []  # steps done when each epoch ended
        self.in_checkpoint = False  # a report made by _write_checkpoint counts as the checkpoint's time
        self.cpu_first: dict[str, float] | None = None  # at the start of step STEADY_FROM
        self.cpu_last: dict[str, float] | None = None  # at the end of the latest step

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + seconds
        self.counts[name] = self.counts.get(name, 0) + 1

    def timed(self, name: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - t0)

        return wrapper

    def timed_batches(self, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            it = fn(*args, **kwargs)
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    self.add("batch", time.perf_counter() - t0)
                    return
                self.add("batch", time.perf_counter() - t0)
                yield item

        return wrapper


class _StepProfiler:
    """torch.profiler over steps [start, start + n) of rank 0; its table is written when it stops."""

    def __init__(self, start: int, n: int, path: Path) -> None:
        self.start, self.n, self.path, self.prof = start, n, path, None

    def before(self, index: int) -> None:
        if self.n and index == self.start:
            import torch

            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.prof.start()

    def after(self, index: int) -> None:
        if self.prof is not None and index == self.start + self.n - 1:
            self.prof.stop()
            table = self.prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
            self.path.write_text(f"torch.profiler, steps {self.start}..{index} of rank 0\n{table}\n")
            self.prof = None


def _wrap_trainer(rec: _Recorder, rank_state: Any, profiler: _StepProfiler | None) -> None:
    trainer = rank_state.trainer
    step = trainer.step

    def timed_step(x, y):
        index = len(rec.step_starts)
        if profiler:
            profiler.before(index)
        if index == STEADY_FROM:
            rec.cpu_first = cpu_snapshot()
        t0 = time.perf_counter()
        rec.step_starts.append(t0)
        try:
            return step(x, y)
        finally:
            rec.step_seconds.append(time.perf_counter() - t0)
            rec.add("step", rec.step_seconds[-1])
            rec.cpu_last = cpu_snapshot()
            if profiler:
                profiler.after(index)

    trainer.step = timed_step


def _patch(w: Any, rec: _Recorder, profile: tuple[int, int], out: Path) -> dict[str, Any]:
    """Replace the worker module's phase functions with timed ones; returns the originals."""
    import ray.train

    originals = {name: getattr(w, name) for name in (*PHASES, "_epoch_batches") if hasattr(w, name)}
    for name in PHASES:
        if name in originals:
            setattr(w, name, rec.timed(name.lstrip("_"), originals[name]))
    write_checkpoint = w._write_checkpoint

    def checkpoint_flagged(*args, **kwargs):
        rec.in_checkpoint = True
        try:
            return write_checkpoint(*args, **kwargs)
        finally:
            rec.in_checkpoint = False

    w._write_checkpoint = checkpoint_flagged
    if "_epoch_batches" in originals:
        w._epoch_batches = rec.timed_batches(originals["_epoch_batches"])
    set_up = w._set_up

    def set_up_and_wrap(config):
        r = set_up(config)
        profiler = None
        if profile[1] and r.rank == 0:
            profiler = _StepProfiler(profile[0], profile[1], out / "torch_profile_rank0.txt")
        _wrap_trainer(rec, r, profiler)
        return r

    w._set_up = set_up_and_wrap
    end_epoch = w._end_epoch

    def end_epoch_and_mark(r):
        rec.epoch_ends.append(len(rec.step_starts))
        return end_epoch(r)

    w._end_epoch = end_epoch_and_mark
    report = originals["ray.train.report"] = ray.train.report
    timed_report = rec.timed("report", report)
    ray.train.report = lambda *a, **k: report(*a, **k) if rec.in_checkpoint else timed_report(*a, **k)
    return originals


def _restore(w: Any, originals: dict[str, Any]) -> None:
    import ray.train

    ray.train.report = originals.pop("ray.train.report")
    for name, fn in originals.items():
        setattr(w, name, fn)


def instrumented_loop(out_dir: str, profile_start: int = 0, profile_steps: int = 0) -> Callable[[dict], None]:
    """A `train_loop_per_worker` that runs genforge's and writes this rank's timings to out_dir/rank<r>.json."""

    def loop(config: dict) -> None:
        import ray.train
        import torch

        from genforge.training import worker as w

        entered_wall, entered = time.time(), time.perf_counter()
        out = Path(out_dir)
        rank = ray.train.get_context().get_world_rank()
        rec = _Recorder()
        originals = _patch(w, rec, (profile_start, profile_steps) if rank == 0 else (0, 0), out)
        prof = None
        if profile_steps and rank == 0:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        try:
            w.train_loop_per_worker(config)
        finally:
            done = time.perf_counter()
            _restore(w, originals)
            if prof is not None:
                prof.disable()
                _write_cprofile(prof, out / "cprofile_rank0.txt")
            record = {
                "rank": rank, "pid": os.getpid(), "threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "entered_wall": entered_wall, "loop_seconds": done - entered,
                "first_step_after_s": (rec.step_starts[0] - entered) if rec.step_starts else None,
                "step_starts": [t - entered for t in rec.step_starts], "step_seconds": rec.step_seconds,
                "epoch_ends": rec.epoch_ends, "phases": rec.phases, "counts": rec.counts,
                "nice": os.nice(0), "cpu": cpu_window(rec.cpu_first, rec.cpu_last),
            }
            (out / f"rank{rank}.json").write_text(json.dumps(record))

    return loop


def _write_cprofile(prof: Any, path: Path) -> None:
    import io
    import pstats

    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(30)
    path.write_text(buf.getvalue())
