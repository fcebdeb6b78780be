"""`genforge tune`: a Ray Tune sweep whose trials each fit a TorchTrainer (the Train V2 pattern).

A trial is a Tune function holding no CPU (it reserves the custom resource `trial_driver`, so on a
2-core machine two one-worker trials run at once instead of deadlocking on their own driver). It
trains the base spec with the sampled keys through the same driver as `genforge train`, as a child
MLflow run of the sweep's parent run, reporting each epoch to Tune through `TuneReportCallback`;
ASHA stops weak trials early, and Optuna's TPE proposes the next ones. Trial names derive from Tune's
trial ids, so a restored sweep resumes its unfinished trials from their own checkpoints.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from genforge.config import Spec, spec_from_dict
from genforge.errors import RunError, SpecError
from genforge.training.driver import TRIAL_DRIVER, preflight
from genforge.tracking.uri import default_storage_path, resolve_tracking_uri
from genforge.tuning import space as spaces

SWEEP_RECORD = "genforge_sweep.json"


@dataclass
class SweepResult:
    parent_run_id: str
    experiment: str
    tracking_uri: str
    metric: str
    mode: str
    best_run_id: str | None
    best_config: dict[str, Any]
    best_objective: float | None
    leaderboard: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _trial_spec(base: dict[str, Any], values: dict[str, Any], trial_id: str, ctx: dict[str, Any]) -> Spec:
    tree = json.loads(json.dumps(base))
    spaces.apply(tree, values)
    tree["name"] = f"{base['name']}-{trial_id}"
    tree.setdefault("train", {}).update(
        epochs=ctx["max_epochs"], workers=ctx["workers"], storage_path=ctx["trial_storage"], max_failures=0
    )
    tree["tracking"] = {"uri": ctx["tracking_uri"], "experiment": ctx["experiment"]}
    if ctx["metric"] == "inloop_fid":
        tree.setdefault("evaluate", {})["every_epochs"] = 1
    return spec_from_dict(tree, source=f"trial {trial_id}")


def run_trial(config: dict[str, Any], ctx: dict[str, Any]) -> None:
    """The Tune function: one trial = one `genforge train` of the base spec with `config` applied."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from genforge.training.driver import train

    trial_id = tune.get_context().get_trial_id()
    spec = _trial_spec(ctx["base"], config, trial_id, ctx)
    tags = {"mlflow.parentRunId": ctx["parent_run_id"], "genforge.trial_id": trial_id, "genforge.sweep": ctx["sweep"]}
    train(spec, echo=print, callbacks=[TuneReportCallback()], tags=tags, finalize=False)


def _check_space(spec: Spec, entries) -> None:
    """Every searched key must make a valid spec: try each distribution's bounds now, not in a trial."""
    base = spec.model_dump(mode="json", by_alias=True)
    for key, e in entries.items():
        for value in (e.loguniform or e.uniform or e.choice):
            try:
                spec_from_dict(spaces.apply(json.loads(json.dumps(base)), {key: value}), source="tune.space")
            except SpecError as exc:
                raise SpecError(f"tune.space.{key}: value {value!r} does not make a valid spec ({exc})") from None


def _concurrency(spec: Spec) -> int:
    import ray

    if spec.tune.max_concurrent_trials:
        return spec.tune.max_concurrent_trials
    resources = ray.cluster_resources()
    per_trial = spec.tune.workers_per_trial
    units = resources.get("GPU", 0) if spec.train.use_gpu else resources.get("CPU", 1)
    return max(1, int(units // per_trial))


def tune_sweep(spec: Spec, echo: Callable[[str], None] = print) -> SweepResult:
    import ray
    from mlflow import MlflowClient
    from ray import tune

    from genforge.training.driver import _ensure_ray
    from genforge.tracking.runs import create_run, experiment_id, reopen_run, run_exists

    data, shape, num_classes = preflight(spec)
    entries = spaces.space_entries(spec)
    _check_space(spec, entries)
    metric = spaces.objective(spec)
    uri = resolve_tracking_uri(spec.tracking.uri)
    storage = Path(spec.train.storage_path).expanduser().resolve() if spec.train.storage_path else default_storage_path(uri)
    sweep = f"{spec.name}-sweep"
    experiment = spec.tracking.experiment or spec.name
    if metric == "inloop_fid":  # trials load the extractor from the cache; train it once, here
        from genforge.evaluator.inloop import prepare

        prepare(spec.model_copy(update={"evaluate": spec.evaluate.model_copy(update={"every_epochs": 1})}), data, echo)

    _ensure_ray(spec)
    has_driver_resource = ray.cluster_resources().get(TRIAL_DRIVER, 0) >= 1
    client = MlflowClient(uri)
    record_path = storage / sweep / SWEEP_RECORD
    parent = None
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record["tracking_uri"] == uri and run_exists(client, record["parent_run_id"]):
            parent = record["parent_run_id"]
            reopen_run(client, parent, spec)
            echo(f"[genforge] sweep {sweep} exists (parent run {parent}): continuing it")
    if parent is None:
        exp_id = experiment_id(client, experiment, uri)
        parent = create_run(client, exp_id, spec, {"kind": "sweep", "metric": metric}, {"mlflow.runName": sweep})
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps({"parent_run_id": parent, "tracking_uri": uri, "created": time.time()}))
        echo(f"[genforge] sweep {sweep}: parent MLflow run {parent} in experiment '{experiment}'")

    ctx = {
        "base": spec.model_dump(mode="json", by_alias=True),
        "parent_run_id": parent,
        "sweep": sweep,
        "tracking_uri": uri,
        "experiment": experiment,
        "trial_storage": str(storage / sweep / "trials"),
        "max_epochs": spec.tune.max_epochs,
        "workers": spec.tune.workers_per_trial,
        "metric": metric,
    }
    trial_resources = {"CPU": 0, TRIAL_DRIVER: 1} if has_driver_resource else {"CPU": 0.01}
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), trial_resources)
    concurrency = _concurrency(spec)
    tuner = _tuner(spec, trainable, entries, metric, storage, sweep, concurrency)
    echo(f"[genforge] {spec.tune.num_samples} trials, {concurrency} at a time, {spec.tune.workers_per_trial} worker(s) "
         f"each, up to {spec.tune.max_epochs} epochs; objective {metric} ({spec.tune.mode}); search {spec.tune.search}, "
         f"scheduler {spec.tune.scheduler}")
    # Tune's own Ctrl-C handler ends fit() quietly, indistinguishable from a finished sweep; without it,
    # Ctrl-C raises KeyboardInterrupt here and the experiment state Tune saves as it goes is resumable.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        grid = tuner.fit()
    except KeyboardInterrupt:
        for child in client.search_runs([client.get_run(parent).info.experiment_id],
                                        f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'RUNNING'"):
            client.set_terminated(child.info.run_id, "KILLED")
        client.set_terminated(parent, "KILLED")
        echo(f"\n[genforge] sweep {sweep} interrupted. Re-run the same command to resume it.")
        raise
    except Exception as exc:
        client.set_terminated(parent, "FAILED")
        raise RunError(f"sweep failed: {exc}") from exc

    from genforge.tuning.leaderboard import close_trials, log_leaderboard

    rows = close_trials(client, parent, grid, metric, spec.tune.mode, spec.tune.max_epochs)
    best = next((r for r in rows if r["objective"] is not None and math.isfinite(r["objective"])), None)
    log_leaderboard(client, parent, rows, list(entries), metric, spec.tune.mode)
    if best is None:
        client.set_terminated(parent, "FAILED")
        raise RunError(f"sweep {sweep}: no trial reported {metric}; see the trial runs under parent {parent}")
    _finalize_best(spec, best, ctx, shape, num_classes, client, echo)
    client.set_tag(parent, "genforge.best_run_id", best["run_id"])
    client.set_tag(parent, "genforge.best_trial", best["trial_id"])
    client.log_metric(parent, f"best_{metric}", best["objective"])
    client.set_terminated(parent, "FINISHED")
    return SweepResult(parent, experiment, uri, metric, spec.tune.mode, best["run_id"], best["config"], best["objective"], rows)


def _tuner(spec: Spec, trainable, entries, metric: str, storage: Path, sweep: str, concurrency: int):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    path = storage / sweep
    if tune.Tuner.can_restore(str(path)):
        return tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, restart_errored=False)
    t = spec.tune
    if t.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search = OptunaSearch(seed=t.seed)
    else:
        search = BasicVariantGenerator(random_state=t.seed)
    scheduler = (
        ASHAScheduler(time_attr="training_iteration", max_t=t.max_epochs, grace_period=min(t.grace_period, t.max_epochs),
                      reduction_factor=t.reduction_factor)
        if t.scheduler == "asha" else FIFOScheduler()
    )
    return tune.Tuner(
        trainable,
        param_space=spaces.to_tune(entries),
        tune_config=tune.TuneConfig(metric=metric, mode=t.mode, search_alg=search, scheduler=scheduler,
                                    num_samples=t.num_samples, max_concurrent_trials=concurrency),
        run_config=tune.RunConfig(name=sweep, storage_path=str(storage), verbose=1),
    )


def _finalize_best(spec: Spec, best: dict[str, Any], ctx: dict[str, Any], shape, num_classes, client, echo) -> None:
    """Log the winning trial's model (platform artifact + MLflow sampler) from its last checkpoint."""
    from genforge.training import checkpoint
    from genforge.training.driver import Plan, finalize_run

    if client.get_run(best["run_id"]).data.tags.get("genforge.model_uri"):
        return
    trial_spec = _trial_spec(ctx["base"], best["config"], best["trial_id"], ctx)
    run_dir = Path(ctx["trial_storage"]) / trial_spec.name
    found = checkpoint.latest(run_dir)
    if found is None:
        raise RunError(f"best trial {best['trial_id']} left no checkpoint in {run_dir}")
    plan = Plan(trial_spec, ctx["tracking_uri"], ctx["experiment"], Path(ctx["trial_storage"]), run_dir, shape, num_classes)
    echo(f"[genforge] logging the best trial's model ({best['trial_id']}, run {best['run_id']})")
    finalize_run(plan, client, best["run_id"], found)
