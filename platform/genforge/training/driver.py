"""`genforge train` on the driver: validate, resolve, resume or create the MLflow run, fit, finalize.

Order matters for the user contract: everything that can be wrong with the input (spec, data, model
shapes, batch size against the data, GPUs) is checked before Ray starts or MLflow is written to, so a
bad input leaves no run behind. The MLflow run id and an absolute tracking URI are handed to the
workers; the run directory of each spec name records which MLflow run it belongs to, so re-running
the same command continues the same run.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from genforge import faults
from genforge.config import RESUMABLE_KEYS, Spec, flatten
from genforge.data import ImageSplits, load_dataset
from genforge.errors import RunError, SpecError, Terminated
from genforge.models import build_models, get_family
from genforge.ray_runtime import Progress, ensure_ray, relayed_progress, run_channel, verbose
from genforge.tracking.uri import default_storage_path, resolve_tracking_uri
from genforge.training import checkpoint
from genforge.training.storage import Location
from genforge.training.trainer import trainer_class

RUN_RECORD = "genforge_run.json"  # in the Ray run directory: which MLflow run this name belongs to


@dataclass
class Plan:
    """Everything resolved on the driver before anything is started."""

    spec: Spec
    tracking_uri: str
    experiment: str
    storage_path: Location  # a local path or an object-store URI (training/storage.py)
    run_dir: Location
    image_shape: tuple[int, int, int]
    num_classes: int
    resume_run_id: str | None = None
    resume_checkpoint: checkpoint.Found | None = None
    inloop: dict[str, Any] | None = None  # paths of the in-loop FID's extractor and reference
    orphaned: Path | None = None  # dry run: where the checkpoints of a run the store no longer has would go
    dataset: Any = None  # the MLflow dataset input a new run records (tracking/lineage.py)


@dataclass
class TrainResult:
    run_id: str
    experiment: str
    tracking_uri: str
    status: str
    metrics: dict[str, float]
    checkpoint: str | None
    epochs: int
    resumed: bool
    model_uri: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def preflight(spec: Spec) -> tuple[ImageSplits, tuple[int, int, int], int]:
    """Load the data and run one forward pass on the driver: fail here, not in N workers."""
    data = load_dataset(spec.data)
    t = spec.train
    per_worker = len(data.train) // t.workers
    if per_worker < t.batch_size // t.workers:
        raise SpecError(
            f"train.batch_size: {t.batch_size} is larger than the training split allows "
            f"({len(data.train)} images over {t.workers} workers)"
        )
    family = get_family(spec.model.family)
    try:
        modules = build_models(spec.model, data.image_shape, data.num_classes)
        x, y = data.train.batch(torch.arange(2))
        trainer_class(family.pattern).sanity_check(modules, x, y, spec.model.latent_dim, family.conditional)
    except (ValueError, RuntimeError) as exc:
        raise SpecError(
            f"model: {spec.model.family} cannot be built for {spec.data.dataset} {data.image_shape}: {exc}"
        ) from None
    if t.use_gpu and not os.environ.get("RAY_ADDRESS") and not torch.cuda.is_available():
        raise SpecError("train.use_gpu: true, but no GPU is visible here (torch.cuda.is_available() is False)")
    return data, data.image_shape, data.num_classes


def storage_root(spec: Spec, tracking_uri: str) -> Location:
    """Where run directories live: `train.storage_path` (a path or a URI), else beside the tracking store."""
    return Location.parse(spec.train.storage_path or default_storage_path(tracking_uri))


def plan(spec: Spec, echo: Callable[[str], None] = print, prepare_inloop: bool = False, dry_run: bool = False) -> Plan:
    """Resolve everything on the driver. `dry_run` changes nothing on disk (a run directory to be moved aside
    is only reported as `orphaned`)."""
    data, shape, num_classes = preflight(spec)
    uri = resolve_tracking_uri(spec.tracking.uri)
    storage = storage_root(spec, uri)
    p = Plan(spec, uri, spec.tracking.experiment or spec.name, storage, storage / spec.name, shape, num_classes,
             dataset=_dataset_input(spec, data))
    record_path = p.run_dir / RUN_RECORD
    if record_path.is_file():
        _plan_resume(p, json.loads(record_path.read_text()), dry_run)
    if prepare_inloop:
        from genforge.evaluator.inloop import prepare

        p.inloop = prepare(spec, data, echo)
    return p


def _dataset_input(spec: Spec, data) -> Any:
    from genforge.tracking.lineage import dataset_input

    d = spec.data
    source = {"dataset": d.dataset, "root": d.root, "image_size": d.image_size, "channels": d.channels,
              "val_fraction": d.val_fraction, "test_fraction": d.test_fraction, "split_seed": d.split_seed}
    sizes = {"train": len(data.train), "val": len(data.val), "test": len(data.test)}
    return dataset_input(d.dataset, data.fingerprint(), source, sizes)


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Flattened spec keys whose value differs between a run's record and the spec now, except those
    that may change on resume. A key the record lacks was added to genforge after the run started
    (e.g. `model.ema_rampup`): the run cannot have set it, so it does not block continuing."""
    # tracking.uri is compared by store identity (a different spelling of the same store is the same run).
    skip = (*RESUMABLE_KEYS, "tracking.uri")
    return sorted(k for k in set(old) | set(new) if k not in skip and k in old and old[k] != new.get(k))


def _plan_resume(p: Plan, record: dict[str, Any], dry_run: bool = False) -> None:
    """Continue the run this name's directory belongs to. A directory that belongs to another store is refused
    (nothing moves); only a run the store says does not exist lets a new run start, with the old checkpoints
    moved aside (never by a dry run); an outage raises and changes nothing."""
    from mlflow import MlflowClient

    from genforge.tracking.runs import run_exists
    from genforge.tracking.uri import store_identity

    run_id = record["mlflow_run_id"]
    if store_identity(record.get("tracking_uri", "")) != store_identity(p.tracking_uri):
        raise SpecError(
            f"name '{p.spec.name}': {p.run_dir} holds run {run_id} of another tracking store "
            f"({record.get('tracking_uri')}), not {p.tracking_uri}; use that store, a new name, or move {p.run_dir}"
        )
    if not run_exists(MlflowClient(p.tracking_uri), run_id):
        aside = p.storage_path / f"{p.run_dir.name}.orphaned-{time.strftime('%Y%m%d-%H%M%S')}"
        if dry_run:
            p.orphaned = aside
            return
        warnings.warn(
            f"checkpoints in {p.run_dir} belong to MLflow run {run_id}, which {p.tracking_uri} no longer has; "
            f"ignoring them (moved to {aside}) and starting a new run",
            stacklevel=2,
        )
        p.run_dir.move_to(aside)
        return
    old, new = flatten(record["spec"]), flatten(p.spec.training_dict())
    changed = changed_keys(old, new)
    if changed:
        diff = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in changed[:4])
        raise SpecError(
            f"name '{p.spec.name}': changed {diff} since run {run_id}; only {', '.join(RESUMABLE_KEYS)} may "
            f"change on resume. To start a new run, use a new name (--set name={p.spec.name}-2) or delete {p.run_dir}"
        )
    found = checkpoint.latest(p.run_dir)
    if found is not None and found.meta["mlflow_run_id"] != run_id:
        raise RunError(f"{found.location} belongs to MLflow run {found.meta['mlflow_run_id']}, but {p.run_dir} to "
                       f"{run_id}")
    done = found.meta["position"]["epoch"] if found else 0
    if done > p.spec.train.epochs:
        raise SpecError(
            f"train.epochs: {p.spec.train.epochs} is below the {done} epochs run {run_id} has trained; "
            f"raise it, or use a new name to start over"
        )
    p.resume_run_id, p.resume_checkpoint = run_id, found


def _fit(
    p: Plan, run_id: str, echo: Callable[[str], None], callbacks: list | None = None, progress: Progress | None = None,
    flag: Any = None,
) -> tuple[Any, bool]:
    """Fit a TorchTrainer of the plan's workers; returns (Ray's result, whether Ctrl-C stopped it).

    Rank 0's progress lines reach `echo` through a relay actor drained on this process, which also carries the
    run's stop flag, unless the caller (a sweep) hands over a `progress` of its own (shared by its trials: each
    trial then gets a flag of its own)."""
    if progress is None:
        with relayed_progress(echo) as relayed:
            return _fit(p, run_id, echo, callbacks, relayed, flag=relayed.relay)
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from genforge.jobs.checks import worker_resources
    from genforge.training.worker import train_loop_per_worker

    t = p.spec.train
    flag = flag if flag is not None else run_channel()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "spec": p.spec.model_dump(mode="json", by_alias=True),
            "run_id": run_id,
            "run_dir": p.run_dir.uri,  # where genforge's own look-up finds a complete checkpoint if Ray's is not
            "tracking_uri": p.tracking_uri,
            "stop_flag": flag,
            "inloop": p.inloop,
            "progress": progress,
            "verbose": verbose(),
            "faults": faults.configured(),  # tests only: see genforge/faults.py
        },
        scaling_config=ScalingConfig(num_workers=t.workers, use_gpu=t.use_gpu,
                                     resources_per_worker=worker_resources(p.spec)),
        **_streamed_datasets(p.spec),
        run_config=RunConfig(
            name=p.spec.name,
            storage_path=p.storage_path.path,
            storage_filesystem=None if p.storage_path.is_local else p.storage_path.fs,
            failure_config=FailureConfig(max_failures=t.max_failures),
            # Ray always keeps the latest checkpoint; the others kept are the best by validation score.
            checkpoint_config=CheckpointConfig(
                num_to_keep=t.keep_checkpoints,
                checkpoint_score_attribute="checkpoint_score" if checkpoint.score_metric(p.spec) else None,
                checkpoint_score_order="min",
            ),
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=list(callbacks or []),
        ),
    )
    return _fit_owning_signals(trainer, flag, echo, t)


def _streamed_datasets(spec: Spec) -> dict[str, Any]:
    """With `data.streaming`, the train split as a Ray Data dataset the ranks read with get_dataset_shard."""
    if not spec.data.streaming:
        return {}
    import ray
    from ray.train import DataConfig

    from genforge.data.streaming import data_task_cpus, train_dataset
    from genforge.jobs.checks import worker_resources

    cpus = data_task_cpus(ray.cluster_resources().get("CPU", 0.0), worker_resources(spec, spec.train.workers)["CPU"])
    return {"datasets": {"train": train_dataset(spec.data, spec.train.seed, cpus)},
            "dataset_config": DataConfig(datasets_to_split=["train"])}


@dataclass
class _Stop:
    """Why the driver asked the workers to checkpoint and stop, and when."""

    reason: str | None = None  # "interrupted" (Ctrl-C), "terminated" (SIGTERM) or "time_limit"
    since: float = 0.0


def _fit_owning_signals(trainer: Any, flag: Any, echo: Callable[[str], None], t) -> tuple[Any, str | None]:
    """trainer.fit() in a thread so the main thread owns the signals and the clock. Ctrl-C, SIGTERM and
    `train.time_limit_s` ask the workers (through the stop flag) to checkpoint and stop at their next tick; a
    second Ctrl-C aborts at once, and so does a SIGTERM whose checkpoint takes longer than `train.preempt_grace_s`
    (the node is going away: the previous checkpoint is what survives). Returns (Ray's result, the stop reason)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            box["error"] = exc

    stop = _Stop()

    def request(reason: str, message: str) -> None:
        if stop.reason is None:
            stop.reason, stop.since = reason, time.monotonic()
            echo(message)
            flag.request.remote()

    def on_sigint(signum, frame) -> None:
        if stop.reason is not None:
            raise KeyboardInterrupt
        request("interrupted", "\n[genforge] Ctrl-C: checkpointing at the next step and stopping (Ctrl-C again to "
                "abort now)")

    def on_sigterm(signum, frame) -> None:
        request("terminated", f"[genforge] SIGTERM: checkpointing at the next step and stopping (within "
                f"train.preempt_grace_s={t.preempt_grace_s:g} s)")

    thread = threading.Thread(target=target, name="genforge-fit", daemon=True)
    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, h) for s, h in ((signal.SIGINT, on_sigint), (signal.SIGTERM, on_sigterm))} \
        if in_main else {}
    started = time.monotonic()
    try:
        thread.start()
        while thread.is_alive():
            thread.join(0.2)
            if t.time_limit_s and time.monotonic() - started > t.time_limit_s:
                request("time_limit", f"[genforge] train.time_limit_s={t.time_limit_s:g} s reached: checkpointing "
                        "and stopping")
            if stop.reason == "terminated" and time.monotonic() - stop.since > t.preempt_grace_s:
                echo(f"[genforge] no checkpoint within train.preempt_grace_s={t.preempt_grace_s:g} s: stopping now")
                raise Terminated
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if "error" in box:
        raise RunError(f"training failed: {_root_cause(box['error'])}") from box["error"]
    return box.get("result"), stop.reason


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"


def finalize_run(p: Plan, client, run_id: str, found: checkpoint.Found) -> str:
    """Log the models of a finished run from its checkpoint; returns the MLflow model URI."""
    model_uri = _finalize(p, client, run_id, found)
    client.set_tag(run_id, "genforge.model_uri", model_uri)
    return model_uri


def _finalize(p: Plan, client, run_id: str, found: checkpoint.Found) -> str:
    """Log the platform artifact, the MLflow sampler and the loss curves from the final checkpoint."""
    import tempfile

    import mlflow

    from genforge import artifacts
    from genforge.images import loss_curves
    from genforge.tracking.model_logging import log_mlflow_sampler, log_platform_model
    from genforge.tracking.runs import metric_history

    state, meta = checkpoint.load(found.path)
    modules = build_models(p.spec.model, p.image_shape, p.num_classes)
    for name, module in modules.items():
        module.load_state_dict(state["trainer"][name])
        module.eval()
    facts = artifacts.sampler_facts(p.spec, p.image_shape, p.num_classes)
    log_platform_model(client, run_id, p.spec, modules, facts, step=meta["position"]["step"])
    with tempfile.TemporaryDirectory() as tmp:
        curves = loss_curves(metric_history(client, run_id), Path(tmp) / "loss_curves.png", title=p.spec.name)
        client.log_artifact(run_id, str(curves))
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(p.tracking_uri)  # the fluent API is global: restore it for library users
    try:
        with mlflow.start_run(run_id=run_id, log_system_metrics=False):
            model_uri = log_mlflow_sampler(get_family(p.spec.model.family).sampler(modules), facts)
    finally:
        mlflow.set_tracking_uri(previous_uri)
    client.set_tag(run_id, "genforge.finalized_epochs", str(meta["position"]["epoch"]))
    client.set_tag(run_id, "genforge.checkpoint", str(found.location))
    client.set_terminated(run_id, "FINISHED")
    return model_uri


def _completes(found: checkpoint.Found | None, epochs: int) -> bool:
    """True when the checkpoint sits at the end of an epoch at or beyond the target."""
    return found is not None and found.meta["position"]["epoch"] >= epochs and found.meta["position"]["batch"] == 0


def _result(
    client, p: Plan, run_id: str, status: str, found: checkpoint.Found | None, resumed: bool, model_uri=None
) -> TrainResult:
    run = client.get_run(run_id)
    return TrainResult(
        run_id=run_id,
        experiment=p.experiment,
        tracking_uri=p.tracking_uri,
        status=status,
        metrics=dict(sorted(run.data.metrics.items())),
        checkpoint=str(found.location) if found else None,
        epochs=found.meta["position"]["epoch"] if found else 0,
        resumed=resumed,
        model_uri=model_uri or run.data.tags.get("genforge.model_uri"),
    )


def _open_run(
    p: Plan, client, tags: dict[str, str] | None, echo: Callable[[str], None]
) -> tuple[str, TrainResult | None]:
    """The MLflow run to train into: the name's run, reopened (with its result if nothing is left to
    do), or a new one, recorded in the run directory."""
    from genforge.tracking.runs import create_run, end_run, experiment_id, reopen_run

    spec, found = p.spec, p.resume_checkpoint
    if p.resume_run_id is not None:
        run_id = p.resume_run_id
        finalized = client.get_run(run_id).data.tags.get("genforge.finalized_epochs")
        if _completes(found, spec.train.epochs) and finalized == str(found.meta["position"]["epoch"]):
            echo(f"[genforge] run {run_id} already trained {found.meta['position']['epoch']} epochs; nothing to do "
                 "(raise train.epochs to continue)")
            return run_id, _result(client, p, run_id, "FINISHED", found, True)
        reopen_run(client, run_id, spec)
        echo(f"[genforge] continuing MLflow run {run_id} from {found.location if found else 'the start'}")
        return run_id, None
    exp_id = experiment_id(client, p.experiment, p.tracking_uri)
    facts = {"image_shape": "x".join(map(str, p.image_shape)), "num_classes": p.num_classes}
    run_id = create_run(client, exp_id, spec, facts, tags, dataset=p.dataset)
    record = {"mlflow_run_id": run_id, "tracking_uri": p.tracking_uri, "spec": spec.training_dict(),
              "created": time.time()}
    try:
        (p.run_dir / RUN_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    except OSError:
        end_run(client, run_id, "FAILED", f"cannot write {p.run_dir / RUN_RECORD}")
        raise
    echo(f"[genforge] MLflow run {run_id} in experiment '{p.experiment}' ({p.tracking_uri})")
    return run_id, None


_STOP_NOTES = {"interrupted": "interrupted (Ctrl-C)", "terminated": "terminated (SIGTERM)",
               "time_limit": "train.time_limit_s reached"}


def _stopped(client, p: Plan, run_id: str, reason: str, found, resumed: bool, echo) -> TrainResult:
    """A stop the driver asked for: the run ends KILLED with its reason; the time limit returns, signals raise."""
    from genforge.tracking.runs import end_run

    end_run(client, run_id, "KILLED", _STOP_NOTES[reason])
    client.set_tag(run_id, "genforge.stop_reason", reason)
    where = found.location if found else "no checkpoint yet"
    echo(f"[genforge] stopped ({_STOP_NOTES[reason]}); checkpoint: {where}. Re-run the same command to continue.")
    if reason == "terminated":
        raise Terminated
    if reason == "interrupted":
        raise KeyboardInterrupt
    return _result(client, p, run_id, "KILLED", found, resumed)


def train(
    spec: Spec,
    echo: Callable[[str], None] = print,
    *,
    callbacks: list | None = None,
    tags: dict[str, str] | None = None,
    finalize: bool = True,
    progress: Progress | None = None,
) -> TrainResult:
    """Train (or continue) the run named `spec.name`. Raises SpecError for bad input, RunError on failure,
    KeyboardInterrupt when stopped; the MLflow run is marked accordingly in each case.

    Sweeps pass Ray Train `callbacks` (to report to Tune), extra run `tags` (the parent run),
    `finalize=False` (a trial's model is logged only if it wins) and the sweep's `progress`, where
    rank 0 says its epoch summaries; without one, progress lines come back through `echo`."""
    p = plan(spec, echo, prepare_inloop=True)
    ensure_ray(spec)
    from mlflow import MlflowClient

    from genforge.tracking.runs import end_run

    client = MlflowClient(p.tracking_uri)
    found = p.resume_checkpoint
    resumed = p.resume_run_id is not None
    run_id, done = _open_run(p, client, tags, echo)
    if done is not None:
        return done

    try:
        stopped = None
        if not _completes(found, spec.train.epochs):
            for removed in checkpoint.remove_partial(p.run_dir):
                echo(f"[genforge] removed {removed}: an incomplete checkpoint left by a crash")
            echo(f"[genforge] training {spec.model.family} on {spec.data.dataset} with {spec.train.workers} worker(s), "
                 f"{'GPU' if spec.train.use_gpu else 'CPU'}; checkpoints in {p.run_dir}")
            _, stopped = _fit(p, run_id, echo, callbacks, progress)
        found = checkpoint.latest(p.run_dir)
        complete = _completes(found, spec.train.epochs)
        if stopped and not complete:
            return _stopped(client, p, run_id, stopped, found, resumed, echo)
        if not complete:
            raise RunError(f"training ended without a final checkpoint in {p.run_dir}")
        if not finalize:
            client.set_terminated(run_id, "FINISHED")
            return _result(client, p, run_id, "FINISHED", found, resumed)
        echo("[genforge] logging the model to MLflow")
        model_uri = finalize_run(p, client, run_id, found)
    except KeyboardInterrupt as exc:
        if client.get_run(run_id).info.status == "RUNNING":
            end_run(client, run_id, "KILLED", _STOP_NOTES["terminated" if isinstance(exc, Terminated) else
                                                          "interrupted"])
        raise
    except SpecError:
        end_run(client, run_id, "FAILED", "bad input")
        raise
    except Exception as exc:
        end_run(client, run_id, "FAILED", str(exc))
        if isinstance(exc, RunError):
            raise
        raise RunError(f"{type(exc).__name__}: {exc}") from exc
    return _result(client, p, run_id, "FINISHED", found, resumed, model_uri)
