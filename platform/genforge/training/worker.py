"""The function every Ray Train worker runs: one documented loop for both training patterns.

Each rank builds the model from the spec, wraps it for DDP, reads its shard of the training split
(DistributedSampler, reshuffled per epoch from the seed) and steps. All I/O happens in one place,
the tick: every `train.log_every_steps` steps the ranks all-reduce their mean step metrics (and
rank 0's stop flag) in one collective; rank 0 logs them to MLflow and prints progress. At the end of
each epoch rank 0 evaluates on the validation split and draws the sample grid; a checkpoint is
written every `train.checkpoint_every` epochs, at the last epoch, and when a stop is requested.
Every rank calls `ray.train.report` exactly once per epoch (plus once on a requested stop).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from genforge.config import Spec
from genforge.data import load_dataset
from genforge.images import reconstruction_pairs, sample_images, save_grid
from genforge.models import build_models, get_family
from genforge.training import checkpoint
from genforge.training.adversarial_trainer import AdversarialTrainer
from genforge.training.likelihood_trainer import LikelihoodTrainer

PATTERNS = {"adversarial": AdversarialTrainer, "likelihood": LikelihoodTrainer}


@dataclass
class Position:
    epoch: int = 0  # epochs fully completed
    batch: int = 0  # batches done in the current epoch (non-zero only after a mid-epoch stop)
    step: int = 0  # optimizer steps done overall
    nonfinite: int = 0  # steps skipped for non-finite gradients


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
    """Accumulates step metrics between ticks and reduces them across ranks in one collective."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.sums, self.count, self.t0 = device, {}, 0, time.perf_counter()

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
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
        steps = self.count
        self.sums, self.count, self.t0 = {}, 0, time.perf_counter()
        return dict(zip(keys, values[:-1])), values[-1] > 0, steps / max(elapsed, 1e-9)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import warnings

    import ray.train

    # DDP's bucket-layout hint fires for the R1 double backward and the cVAE's broadcast one-hot input;
    # it is about speed, not correctness, and would repeat every step.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    spec = Spec.model_validate(config["spec"])
    t = spec.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device() if t.use_gpu else torch.device("cpu")

    torch.manual_seed(t.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    data = load_dataset(spec.data)
    family = get_family(spec.model.family)
    modules = build_models(spec.model, data.image_shape, data.num_classes)
    trainer = PATTERNS[family.pattern](modules, spec, device, _wrapper(device))

    pos = Position()
    torch.manual_seed(_rank_seed(t.seed, rank))
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as path:
            state, meta = checkpoint.load(path, map_location=device)
        if meta["mlflow_run_id"] != config["run_id"]:
            raise RuntimeError(f"checkpoint {restored.path} belongs to MLflow run {meta['mlflow_run_id']}, not {config['run_id']}")
        trainer.load_state_dict(state["trainer"])
        pos = Position(**meta["position"])
        rng = state["rng"]
        if len(rng) == world:
            _set_rng_state(rng[rank], device)
        else:  # the worker count changed: continue exactly per rank is impossible, so reseed from the step
            torch.manual_seed(_rank_seed(t.seed + pos.step, rank))
        if rank == 0:
            print(f"[genforge] resumed from {restored.path} at epoch {pos.epoch}, step {pos.step}", flush=True)

    logger = None
    if rank == 0:
        from genforge.tracking.logger import RunLogger

        logger = RunLogger(config["tracking_uri"], config["run_id"])
    stop_flag = config.get("stop_flag")
    inloop = None
    if rank == 0 and config.get("inloop"):
        from genforge.evaluator.inloop import InLoopFID

        inloop = InLoopFID(config["inloop"], spec, data.num_classes, family.conditional, device)

    local_bs = t.batch_size // world
    shard = torch.utils.data.DistributedSampler(
        range(len(data.train)), num_replicas=world, rank=rank, shuffle=True, seed=t.seed, drop_last=True
    )
    steps_per_epoch = len(shard) // local_bs
    if t.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, t.max_steps_per_epoch)

    def write_checkpoint(metrics: dict[str, float]) -> None:
        rngs = _all_gather({k: v.cpu() for k, v in _rng_state(device).items()})
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                meta = {
                    "mlflow_run_id": config["run_id"],
                    "position": pos.__dict__,
                    "epochs_target": t.epochs,
                    "world_size": world,
                    "spec": spec.training_dict(),
                    "spec_fingerprint": spec.fingerprint(),
                    "image_shape": list(data.image_shape),
                    "num_classes": data.num_classes,
                    "family": family.name,
                    "metrics": metrics,
                    "created": time.time(),
                }
                checkpoint.write(tmp, {"trainer": trainer.state_dict(), "rng": rngs}, meta)
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_dir_name=checkpoint.dir_name(pos.step))

    def stop_requested() -> bool:
        if rank != 0 or stop_flag is None:
            return False
        import ray

        return bool(ray.get(stop_flag.get.remote(), timeout=30))

    tick = _Tick(device)
    last_print, stop = 0.0, False
    train_metrics: dict[str, float] = {}
    epoch_t0 = time.perf_counter()
    while pos.epoch < t.epochs and not stop:
        shard.set_epoch(pos.epoch)
        order = torch.tensor(list(iter(shard)), dtype=torch.long)
        if pos.batch == 0:
            epoch_t0 = time.perf_counter()
        while pos.batch < steps_per_epoch:
            x, y = data.train.batch(order[pos.batch * local_bs : (pos.batch + 1) * local_bs])
            result = trainer.step(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
            pos.batch, pos.step = pos.batch + 1, pos.step + 1
            pos.nonfinite += 0 if result.ok else 1
            tick.add(result.metrics)
            if pos.step % t.log_every_steps == 0 or pos.batch == steps_per_epoch:
                train_metrics, stop, steps_per_s = tick.reduce(stop_requested())
                if rank == 0:
                    row = {f"train/{k}": v for k, v in train_metrics.items()}
                    row.update({"images_per_s": steps_per_s * t.batch_size, "nonfinite_steps": pos.nonfinite})
                    logger.log_metrics(row, step=pos.step)
                    if time.perf_counter() - last_print > 5 or pos.batch == steps_per_epoch:
                        shown = " ".join(f"{k}={v:.4g}" for k, v in train_metrics.items() if "grad" not in k)
                        print(f"[genforge] epoch {pos.epoch + 1}/{t.epochs} step {pos.step} | {shown} | "
                              f"{steps_per_s * t.batch_size:.0f} img/s", flush=True)
                        last_print = time.perf_counter()
                if pos.nonfinite > t.max_nonfinite_steps:
                    raise FloatingPointError(
                        f"{pos.nonfinite} steps had non-finite gradients (limit train.max_nonfinite_steps="
                        f"{t.max_nonfinite_steps}); last at step {pos.step}. Lower train.lr or check the data."
                    )
                if stop:
                    break
        if pos.batch < steps_per_epoch:  # stopped mid-epoch: save exactly where we are
            write_checkpoint({"epoch": pos.epoch, "step": pos.step, "stopped": 1.0, **train_metrics})
            break

        pos.epoch, pos.batch = pos.epoch + 1, 0
        epoch_metrics: dict[str, float] = {"epoch": pos.epoch, "epoch_time_s": time.perf_counter() - epoch_t0}
        if rank == 0:
            epoch_metrics.update(trainer.evaluate(data.val, "val"))
            if pos.epoch == t.epochs:
                epoch_metrics.update(trainer.evaluate(data.test, "test"))
            if inloop is not None and (pos.epoch % spec.evaluate.every_epochs == 0 or pos.epoch == t.epochs):
                epoch_metrics["inloop_fid"] = inloop(family.sampler(trainer.modules()).eval())
                _back_to_training(trainer)
            logger.log_metrics(epoch_metrics, step=pos.step)
            _log_grids(logger, trainer, family, data, device, spec, pos.epoch)
            shown = " ".join(f"{k}={v:.4g}" for k, v in epoch_metrics.items() if k != "epoch")
            print(f"[genforge] epoch {pos.epoch}/{t.epochs} done | {shown}", flush=True)
        report = {"step": pos.step, **train_metrics, **epoch_metrics}
        if pos.epoch % t.checkpoint_every == 0 or pos.epoch == t.epochs or stop:
            write_checkpoint(report)
        else:
            ray.train.report(report)


def _log_grids(logger, trainer, family, data, device, spec, epoch: int) -> None:
    """The epoch's sample grid (rows per class for conditional models; input/reconstruction pairs for VAEs)."""
    sampler = family.sampler(trainer.modules()).eval()
    with tempfile.TemporaryDirectory() as tmp:
        images, nrow = sample_images(
            sampler, spec.model.latent_dim, data.num_classes, device, seed=spec.train.seed, conditional=family.conditional
        )
        logger.log_artifact(save_grid(images, nrow, Path(tmp) / f"epoch_{epoch:04d}.png"), "samples")
        if family.pattern == "likelihood":
            x, y = data.val.batch(torch.arange(min(32, len(data.val))))
            with torch.no_grad():
                out = trainer.vae(x.to(device), y.to(device) if family.conditional else None)
            pairs = reconstruction_pairs(x, out.recon.cpu())
            logger.log_artifact(save_grid(pairs, 16, Path(tmp) / f"epoch_{epoch:04d}.png"), "reconstructions")
    _back_to_training(trainer)


def _back_to_training(trainer) -> None:
    """Undo a sampler's eval(): every module trains again except the EMA generator, which always samples."""
    for name, module in trainer.modules().items():
        if name != "G_ema":
            module.train()
