"""The function every Ray Train worker runs: one documented loop for every training pattern.

Each rank builds the model from the spec, wraps it for DDP, reads its shard of the training split
(DistributedSampler, reshuffled per epoch from the seed) and steps. The loop holds a `Trainer`
(training/trainer.py) and never asks which pattern it is. All I/O happens in one place, the tick:
every `train.log_every_steps` steps the ranks all-reduce their mean step metrics (and rank 0's stop
flag) in one collective; rank 0 logs them to MLflow and sends a progress line to the driver. At the
end of each epoch rank 0 evaluates on the validation split and draws the trainer's grids; a
checkpoint is written every `train.checkpoint_every` epochs, at the last epoch, and when a stop is
requested. Every rank calls `ray.train.report` exactly once per epoch (plus once on a requested stop).

The phases, in order: `_set_up` (data, model, trainer, shard), `_restore` (a checkpoint, if Ray hands
one over), `_attach_io` (rank 0's MLflow logger and in-loop FID), then per epoch `_run_epoch` (steps
and ticks) and `_end_epoch` (evaluation, grids, summary), each followed by `_write_checkpoint` or a
plain report.
"""

from __future__ import annotations

import copy
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import torch
import torch.distributed as dist

from genforge import faults
from genforge.config import Spec
from genforge.data import ImageSplits, load_dataset
from genforge.images import save_grid
from genforge.models import build_models, get_family
from genforge.ray_runtime import Progress, quiet_worker_logs
from genforge.training import checkpoint
from genforge.training.health import HealthMonitor, sample_diversity
from genforge.training.trainer import Trainer, trainer_class


@dataclass
class Position:
    epoch: int = 0  # epochs fully completed
    batch: int = 0  # batches done in the current epoch (non-zero only after a mid-epoch stop)
    step: int = 0  # optimizer steps done overall
    nonfinite: int = 0  # steps skipped for non-finite gradients
    rollbacks: int = 0  # returns to the last checkpoint after a non-finite step (train.on_nonfinite: rollback)
    lr_scale: float = 1.0  # learning rates relative to the spec's, halved by each rollback


def _rank_seed(seed: int, rank: int) -> int:
    return seed * 1_000_003 + rank + 1


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _wrapper(device: torch.device):
    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        if not _distributed():
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)

    return wrap


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _all_gather(obj: Any) -> list[Any]:
    if not _distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class _Tick:
    """Accumulates step metrics between ticks and reduces them across ranks in one collective.

    A step skipped for non-finite gradients adds no metrics (its NaN would turn the whole window's means into
    NaN); it still counts for throughput and in `nonfinite_steps`. The ranks agree on every skip (the decision
    uses the all-reduced gradient norm), so they always hold the same keys.
    """

    def __init__(self, device: torch.device) -> None:
        self.device, self.sums, self.count, self.steps, self.t0 = device, {}, 0, 0, time.perf_counter()

    def add(self, metrics: dict[str, torch.Tensor], ok: bool = True) -> None:
        self.steps += 1
        if not ok:
            return
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v.detach().float()
        self.count += 1

    def reduce(self, stop: bool) -> tuple[dict[str, float], bool, float]:
        keys = sorted(self.sums)
        means = [(self.sums[k] / max(self.count, 1)).cpu() for k in keys]
        packed = torch.stack(means + [torch.tensor(float(stop))]).to(self.device)
        if _distributed():
            dist.all_reduce(packed)
            packed[:-1] /= dist.get_world_size()
        values = packed.cpu().tolist()
        elapsed = time.perf_counter() - self.t0
        steps = self.steps
        self.sums, self.count, self.steps, self.t0 = {}, 0, 0, time.perf_counter()
        return dict(zip(keys, values[:-1])), values[-1] > 0, steps / max(elapsed, 1e-9)


@dataclass
class _Rank:
    """Everything one rank holds while it trains."""

    config: dict[str, Any]
    spec: Spec
    rank: int
    world: int
    device: torch.device
    data: ImageSplits
    trainer: Trainer
    shard: torch.utils.data.DistributedSampler
    steps_per_epoch: int
    progress: Progress
    pos: Position = field(default_factory=Position)
    logger: Any = None  # rank 0: the MLflow RunLogger
    inloop: Any = None  # rank 0, with evaluate.every_epochs: the in-loop FID
    health: Any = None  # rank 0: the training-health monitor (training/health.py)
    tick: _Tick | None = None
    faults: Any = None  # genforge.faults.Injector: the test-only faults aimed at this rank
    last_good: dict[str, Any] | None = None  # on_nonfinite: rollback: the last checkpointed state, on the CPU
    score: float = checkpoint.UNSCORED  # the latest validation score (lower is better): ranks checkpoints to keep
    stop: bool = False
    train_metrics: dict[str, float] = field(default_factory=dict)
    last_print: float = 0.0
    epoch_t0: float = field(default_factory=time.perf_counter)

    @property
    def local_batch(self) -> int:
        return self.spec.train.batch_size // self.world


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Train `config["spec"]` on this rank into MLflow run `config["run_id"]`, resuming Ray's checkpoint."""
    import ray.train

    r = _set_up(config)
    _restore(r, ray.train.get_checkpoint())
    _attach_io(r)
    _remember_good_state(r)
    t = r.spec.train
    try:
        while r.pos.epoch < t.epochs and not r.stop:
            if not _run_epoch(r):  # stopped mid-epoch: save exactly where we are
                _write_checkpoint(r, {"epoch": r.pos.epoch, "step": r.pos.step, "stopped": 1.0, **r.train_metrics})
                break
            report = _end_epoch(r)
            if r.pos.epoch % t.checkpoint_every == 0 or r.pos.epoch == t.epochs or r.stop:
                _write_checkpoint(r, report)
            else:
                ray.train.report(report)
    finally:
        if r.logger is not None:
            r.logger.close()  # every buffered row reaches the server (or a line says how many did not)
    if r.rank == 0:
        r.progress.flush()  # the last lines reach the driver before this worker exits


def _set_up(config: dict[str, Any]) -> _Rank:
    """Data, model and trainer with identical initial weights on every rank; then this rank's RNG and shard."""
    import ray.train

    # DDP's bucket-layout hint fires for the R1 double backward and the cVAE's broadcast one-hot input;
    # it is about speed, not correctness, and would repeat every step.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    quiet_worker_logs(bool(config.get("verbose")))
    spec = Spec.model_validate(config["spec"])
    t = spec.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if t.use_gpu else torch.device("cpu")
    # As many threads as CPUs reserved: more oversubscribes the node, fewer leaves a reserved CPU idle.
    torch.set_num_threads(t.cpus_per_worker)

    torch.manual_seed(t.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    data = load_dataset(spec.data)
    modules = build_models(spec.model, data.image_shape, data.num_classes)
    trainer = trainer_class(get_family(spec.model.family).pattern)(modules, spec, device, _wrapper(device))
    torch.manual_seed(_rank_seed(t.seed, rank))

    shard = torch.utils.data.DistributedSampler(
        range(len(data.train)), num_replicas=world, rank=rank, shuffle=True, seed=t.seed, drop_last=True
    )  # the in-memory path's order; a streamed train split is Ray Data's shard (and has the same length)
    steps_per_epoch = len(shard) // (t.batch_size // world)
    if t.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, t.max_steps_per_epoch)
    trainer.total_steps = t.epochs * steps_per_epoch  # where a cosine learning-rate schedule ends
    progress = config.get("progress") or Progress()
    injector = faults.Injector.for_rank(config.get("faults"), config.get("run_dir") or ".", rank, t.lr)
    return _Rank(config, spec, rank, world, device, data, trainer, shard, steps_per_epoch, progress,
                 tick=_Tick(device), faults=injector)


def _restore(r: _Rank, restored: Any) -> None:
    """Continue from the run's newest complete checkpoint: trainer state, position and this rank's RNG stream."""
    loaded = _load_verified(r, restored)
    if loaded is None:
        return
    state, meta, where = loaded
    if meta["mlflow_run_id"] != r.config["run_id"]:
        owner = meta["mlflow_run_id"]
        raise RuntimeError(f"checkpoint {where} belongs to MLflow run {owner}, not {r.config['run_id']}")
    r.trainer.load_state_dict(state["trainer"])
    r.pos = Position(**meta["position"])
    r.score = meta.get("metrics", {}).get("checkpoint_score", checkpoint.UNSCORED)
    rng = state["rng"]
    if len(rng) == r.world:
        _set_rng_state(rng[r.rank], r.device)
    else:  # the worker count changed: continue exactly per rank is impossible, so reseed from the step
        torch.manual_seed(_rank_seed(r.spec.train.seed + r.pos.step, r.rank))
    if r.rank == 0:
        r.progress.say(f"resumed from {where} at epoch {r.pos.epoch}, step {r.pos.step}")


def _load_verified(r: _Rank, restored: Any) -> tuple[dict, dict, str] | None:
    """The run's newest complete checkpoint, decided alike on every rank (they verify the same files).

    Ray's (`get_checkpoint()`) where it verifies and nothing newer is in the run directory. Ray's record can lag
    the directory: a checkpoint is persisted before Ray's controller registers its report, so a node lost in
    between (the report dies with it) leaves a complete checkpoint that Ray's snapshot lacks, and a re-run would
    get an older checkpoint or none and retrain what is on disk. A corrupt checkpoint (cut short, missing files,
    wrong sha256) must not make every retry fail either. In both cases the directory's newest verified one wins."""
    run_dir = r.config.get("run_dir")
    reason = None
    newest = checkpoint.newest_name(run_dir) if run_dir and restored is not None else None
    if restored is not None and (newest is None or newest <= PurePosixPath(str(restored.path)).name):
        try:
            with restored.as_directory() as path:
                state, meta = checkpoint.load(path, map_location=r.device)
            return state, meta, str(restored.path)
        except (checkpoint.CheckpointError, OSError, RuntimeError) as exc:
            reason = f"refusing checkpoint {restored.path}: {exc}"
    found = checkpoint.latest(run_dir) if run_dir else None
    if r.rank == 0 and reason is not None:
        r.progress.say(
            f"WARNING: {reason}; " + (f"using {found.path}" if found else "no complete checkpoint: starting over")
        )
    if found is None:
        return None
    state, meta = checkpoint.load(found.path, map_location=r.device)
    return state, meta, str(found.path)


def _attach_io(r: _Rank) -> None:
    """Rank 0 logs to the MLflow run and, if asked, computes the in-loop FID."""
    if r.rank != 0:
        return
    from genforge.tracking.logger import RunLogger

    r.logger = RunLogger(r.config["tracking_uri"], r.config["run_id"], say=lambda m: r.progress.say(f"WARNING: {m}"))
    r.health = HealthMonitor(latent_dim=r.spec.model.latent_dim)
    if r.config.get("inloop"):
        from genforge.evaluator.inloop import InLoopFID

        r.inloop = InLoopFID(r.config["inloop"], r.spec, r.data.num_classes, r.spec.model.conditional, r.device)


def _epoch_batches(r: _Rank) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's batches of the current epoch from `r.pos.batch` on: float images in [0, 1] and labels."""
    bs = r.local_batch
    if r.spec.data.streaming:
        yield from _streamed_batches(r)
        return
    r.shard.set_epoch(r.pos.epoch)
    order = torch.tensor(list(iter(r.shard)), dtype=torch.long)
    for b in range(r.pos.batch, r.steps_per_epoch):
        yield r.data.train.batch(order[b * bs : (b + 1) * bs])


STREAM_SHUFFLE_ROWS = 2048  # local shuffle buffer of a streamed shard: about 25 MB of 64x64 RGB


def _streamed_batches(r: _Rank) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Ray Data's shard of the streamed train split (data/streaming.py). The local shuffle is re-seeded from the
    seed, epoch and rank every epoch; a mid-epoch resume skips the batches it had done, reading but not training on
    them, so the epoch keeps its length. Which rows reach which rank is Ray Data's streaming split, so unlike the
    in-memory path the order is not reproduced bit for bit across runs."""
    import ray.train

    seed = _rank_seed(r.spec.train.seed + 7919 * r.pos.epoch, r.rank) % 2**32
    batches = ray.train.get_dataset_shard("train").iter_torch_batches(
        batch_size=r.local_batch, drop_last=True, device="cpu",
        local_shuffle_buffer_size=STREAM_SHUFFLE_ROWS, local_shuffle_seed=seed,
    )
    for i, batch in enumerate(batches):
        if i >= r.pos.batch:
            yield batch["image"].float().div_(255.0), batch["label"]


def _run_epoch(r: _Rank) -> bool:
    """Step through the rest of the current epoch; False when a stop was agreed on before its end."""
    if r.pos.batch == 0:
        r.epoch_t0 = time.perf_counter()
    for x, y in _epoch_batches(r):
        if r.pos.batch >= r.steps_per_epoch:  # max_steps_per_epoch, or a streamed shard longer than the plan
            break
        if r.faults.at_step(r.pos.step + 1):
            x = torch.full_like(x, float("nan"))
        result = r.trainer.step(x.to(r.device, non_blocking=True), y.to(r.device, non_blocking=True))
        r.pos.batch, r.pos.step = r.pos.batch + 1, r.pos.step + 1
        if not result.ok and _handle_nonfinite(r):
            return _run_epoch(r)  # rolled back: the position (maybe an earlier epoch) is the checkpoint's
        r.pos.nonfinite += 0 if result.ok else 1
        r.tick.add(result.metrics, result.ok)
        if r.pos.step % r.spec.train.log_every_steps == 0 or r.pos.batch == r.steps_per_epoch:
            _tick(r)
            if r.stop:
                break
    if r.pos.batch < r.steps_per_epoch and not r.stop:  # every rank must take the same steps (DDP)
        raise RuntimeError(f"rank {r.rank}: the train split ran out after {r.pos.batch} of {r.steps_per_epoch} "
                           "batches this epoch")
    return r.pos.batch == r.steps_per_epoch


def _handle_nonfinite(r: _Rank) -> bool:
    """A step came out non-finite (every rank agrees: the decision uses all-reduced gradients). `skip`: False, the
    step was skipped and counts against max_nonfinite_steps at the tick; `stop`: raise; `rollback`: restore the last
    checkpointed state with the learning rates halved and return True."""
    t = r.spec.train
    if t.on_nonfinite == "skip":
        return False
    if t.on_nonfinite == "stop":
        raise FloatingPointError(f"non-finite loss or gradients at step {r.pos.step} (train.on_nonfinite=stop)")
    if r.pos.rollbacks >= t.max_rollbacks:
        raise FloatingPointError(
            f"non-finite loss or gradients at step {r.pos.step} after {r.pos.rollbacks} rollbacks "
            f"(limit train.max_rollbacks={t.max_rollbacks}); lower train.lr or check the data"
        )
    good, failed_at = r.last_good, r.pos.step
    state = copy.deepcopy(good["trainer"])
    for part in state.values():  # optimizer state_dicts carry their learning rates: halve them
        for group in part.get("param_groups", []) if isinstance(part, dict) else []:
            group["lr"] *= 0.5
    r.trainer.load_state_dict(state)
    _set_rng_state(good["rng"], r.device)
    r.pos = Position(**{**good["position"], "rollbacks": r.pos.rollbacks + 1,
                        "lr_scale": good["position"]["lr_scale"] * 0.5})
    r.tick = _Tick(r.device)  # the window's numbers belong to the abandoned steps
    if r.rank == 0:
        r.progress.say(
            f"WARNING: non-finite loss or gradients at step {failed_at}: rolled back to step {r.pos.step} with the "
            f"learning rates x{r.pos.lr_scale:g} (rollback {r.pos.rollbacks} of at most {t.max_rollbacks})"
        )
        r.logger.log_metrics({"rollbacks": r.pos.rollbacks, "lr_scale": r.pos.lr_scale}, step=failed_at)
    return True


def _remember_good_state(r: _Rank) -> None:
    """Keep a CPU copy of the state just checkpointed (or restored), the target of a rollback."""
    if r.spec.train.on_nonfinite != "rollback":
        return
    to_cpu = lambda v: v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v  # noqa: E731
    r.last_good = {
        "trainer": _map_tensors(r.trainer.state_dict(), to_cpu),
        "rng": {k: v.cpu().clone() for k, v in _rng_state(r.device).items()},
        "position": dict(r.pos.__dict__),
    }


def _map_tensors(tree: Any, fn) -> Any:
    if isinstance(tree, dict):
        return {k: _map_tensors(v, fn) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map_tensors(v, fn) for v in tree)
    return fn(tree)


def _tensors(tree: Any):
    """Every tensor in a state dict (nested dicts, lists and tuples)."""
    if isinstance(tree, dict):
        tree = tree.values()
    if isinstance(tree, (list, tuple, type({}.values()))):
        for v in tree:
            yield from _tensors(v)
    elif isinstance(tree, torch.Tensor):
        yield tree


def _all_finite(tree: Any) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in _tensors(tree) if t.is_floating_point())


def _tick(r: _Rank) -> None:
    """The periodic I/O: agree on metrics and the stop flag; rank 0 logs a row and, every 5 s, a line."""
    t = r.spec.train
    r.train_metrics, r.stop, steps_per_s = r.tick.reduce(_stop_requested(r))
    if r.rank == 0:
        row = {f"train/{k}": v for k, v in r.train_metrics.items()}
        row.update({"images_per_s": steps_per_s * t.batch_size, "nonfinite_steps": r.pos.nonfinite})
        row.update(_judge_health(r, r.train_metrics))
        r.logger.log_metrics(row, step=r.pos.step)
        if time.perf_counter() - r.last_print > 5 or r.pos.batch == r.steps_per_epoch:
            shown = " ".join(f"{k}={v:.4g}" for k, v in r.train_metrics.items() if "grad" not in k)
            r.progress.say(
                f"epoch {r.pos.epoch + 1}/{t.epochs} step {r.pos.step} | {shown} | "
                f"{steps_per_s * t.batch_size:.0f} img/s",
                tick=True,
            )
            r.last_print = time.perf_counter()
    if r.pos.nonfinite > t.max_nonfinite_steps:
        raise FloatingPointError(
            f"{r.pos.nonfinite} steps had non-finite gradients (limit train.max_nonfinite_steps="
            f"{t.max_nonfinite_steps}); last at step {r.pos.step}. Lower train.lr or check the data."
        )


def _stop_requested(r: _Rank) -> bool:
    stop_flag = r.config.get("stop_flag")
    if r.rank != 0 or stop_flag is None:
        return False
    import ray

    return bool(ray.get(stop_flag.get.remote(), timeout=30))


def _end_epoch(r: _Rank) -> dict[str, float]:
    """Close the epoch: rank 0 evaluates, logs, draws the grids and says a summary; returns the report."""
    t = r.spec.train
    r.pos.epoch, r.pos.batch = r.pos.epoch + 1, 0
    epoch_metrics: dict[str, float] = {"epoch": r.pos.epoch, "epoch_time_s": time.perf_counter() - r.epoch_t0,
                                       **_resident_memory_mb()}
    if r.rank == 0:
        r.trainer.prepare_sampler(r.data)  # before anything samples, and before the epoch's checkpoint
        epoch_metrics.update(_evaluate(r))
        r.score = epoch_metrics.get(checkpoint.score_metric(r.spec) or "", r.score)
        r.logger.log_metrics({**epoch_metrics, **_judge_health(r, epoch_metrics)}, step=r.pos.step)
        _log_figures(r)
        shown = " ".join(f"{k}={v:.4g}" for k, v in epoch_metrics.items() if k != "epoch")
        r.progress.say(f"epoch {r.pos.epoch}/{t.epochs} done | {shown}")
    return {"step": r.pos.step, **r.train_metrics, **epoch_metrics}


def _resident_memory_mb() -> dict[str, float]:
    """This worker's private resident memory now (`rss_private_mb`: /proc's RssAnon, what the process itself holds,
    e.g. a decoded dataset) and its peak total resident set (`peak_rss_mb`). The peak also counts shared pages it has
    mapped, such as the Ray object store's blocks a streamed dataset passes through, so it grows with the data read
    even when the process holds none of it; Linux only (empty elsewhere). Freed heap the allocators keep for reuse
    (glibc's arenas, Arrow's mimalloc pool) is handed back first: without that, the reading varies by tens of MB
    from one run to the next with what happened to be freed last, not with what the process holds."""
    import resource

    _return_freed_heap()
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return {}
    anon = next((line.split()[1] for line in status.splitlines() if line.startswith("RssAnon:")), None)
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if anon is not None:
        out["rss_private_mb"] = int(anon) / 1024.0  # reported in kB
    return out


def _return_freed_heap() -> None:
    """glibc's malloc_trim(0) and, where a streamed dataset loaded Arrow, its pool's release_unused()."""
    import ctypes
    import sys

    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    try:
        ctypes.CDLL(None).malloc_trim(0)  # the process's own symbols: glibc's, where it is the C library
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        pass


def _evaluate(r: _Rank) -> dict[str, float]:
    """Held-out numbers of the epoch: validation, the test split at the last epoch, the in-loop FID."""
    t, epoch = r.spec.train, r.pos.epoch
    metrics = r.trainer.evaluate(r.data.val, "val")
    if epoch == t.epochs:
        metrics.update(r.trainer.evaluate(r.data.test, "test"))
    if r.inloop is not None and (epoch % r.spec.evaluate.every_epochs == 0 or epoch == t.epochs):
        metrics.update(r.inloop(r.trainer.sampler()))
    metrics["sample_diversity"] = _sample_diversity(r)
    r.trainer.back_to_training()
    return metrics


DIVERSITY_SAMPLES = 256  # per epoch: enough for a stable mean pairwise distance, cheap next to an epoch


def _sample_diversity(r: _Rank) -> float:
    """Mean pairwise distance among fixed-seed samples over that among validation images (training/health.py):
    near 1 when healthy, near 0 under mode collapse."""
    from genforge.sampling import class_cycle, draw

    n = min(DIVERSITY_SAMPLES, len(r.data.val))
    if n < 2:
        return float("nan")
    labels = class_cycle(n, r.data.num_classes) if r.spec.model.conditional else None
    fakes = draw(r.trainer.sampler(), r.spec.model.latent_dim, n, seed=r.spec.train.seed, labels=labels,
                 device=r.device)
    reals, _ = r.data.val.batch(torch.arange(n))
    return sample_diversity(fakes.float().cpu(), reals.float())


def _judge_health(r: _Rank, metrics: dict[str, float]) -> dict[str, float]:
    """Rank 0: the health flags to log with these metrics; a warning line on each onset and recovery."""
    flags, lines = r.health.update(metrics)
    for line in lines:
        r.progress.say(line)
    return flags


def _log_figures(r: _Rank) -> None:
    """The trainer's grids of the epoch, one artifact folder each (`samples`, `reconstructions`)."""
    with tempfile.TemporaryDirectory() as tmp:
        for folder, (images, nrow) in r.trainer.figures(r.data, r.device, r.spec.train.seed).items():
            path = save_grid(images, nrow, Path(tmp) / folder / f"epoch_{r.pos.epoch:04d}.png")
            r.logger.log_artifact(path, folder)
    r.trainer.back_to_training()


def _write_checkpoint(r: _Rank, metrics: dict[str, float]) -> None:
    """Every rank reports; rank 0's report carries the checkpoint (with every rank's RNG state)."""
    import ray.train

    state = r.trainer.state_dict()
    if not _all_finite(state):  # every rank holds the same weights, so every rank refuses alike
        raise FloatingPointError(f"refusing to checkpoint non-finite weights at step {r.pos.step}")
    rngs = _all_gather({k: v.cpu() for k, v in _rng_state(r.device).items()})
    # Rank 0 knows the score (it evaluates); every rank reports the same number, as Ray ranks checkpoints by it.
    metrics = {**metrics, "checkpoint_score": _all_gather(r.score)[0]}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = None
        if r.rank == 0:
            meta = {
                "mlflow_run_id": r.config["run_id"],
                "position": r.pos.__dict__,
                "epochs_target": r.spec.train.epochs,
                "world_size": r.world,
                "torch_threads": torch.get_num_threads(),
                "spec": r.spec.training_dict(),
                "spec_fingerprint": r.spec.fingerprint(),
                "image_shape": list(r.data.image_shape),
                "num_classes": r.data.num_classes,
                "family": r.spec.model.family,
                "metrics": metrics,
                "created": time.time(),
            }
            checkpoint.write(tmp, {"trainer": state, "rng": rngs}, meta)
            ckpt = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=checkpoint.dir_name(r.pos.step))
    _remember_good_state(r)
