"""`genforge tune`: a Ray Tune sweep whose trials each fit a TorchTrainer (the Train V2 pattern).

A trial is a Tune function holding no CPU (it reserves the custom resource `trial_driver`, so on a
2-core machine two one-worker trials run at once instead of deadlocking on their own driver). It
trains the base spec with the sampled keys through the same driver as `genforge train`, as a child
MLflow run of the sweep's parent run, reporting each epoch to Tune through `TuneReportCallback`;
ASHA stops weak trials early, and Optuna's TPE proposes the next ones. Trial names derive from Tune's
trial ids, so a restored sweep resumes its unfinished trials from their own checkpoints. With
`tune.retrain_epochs`, the best trial's configuration is then trained to that budget as its own run
(tuning/retrain.py), and that run, not the short trial, is the sweep's result.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from genforge import faults
from genforge.config import Spec, spec_from_dict
from genforge.errors import RunError, SpecError
from genforge.ray_runtime import TRIAL_DRIVER, Progress, ensure_ray, relayed_progress, verbose
from genforge.tracking.uri import resolve_tracking_uri, store_identity
from genforge.training.driver import preflight, storage_root
from genforge.training.storage import Location
from genforge.tuning import space as spaces

SWEEP_RECORD = "genforge_sweep.json"


@dataclass
class SweepResult:
    """`best_run_id` is the run that goes on to evaluation and registration: the retrained run when
    `tune.retrain_epochs` is set, else the best trial's run. `best_trial_run_id`, `best_config` and
    `best_objective` describe the leaderboard's winner (a trial) either way."""

    parent_run_id: str
    experiment: str
    tracking_uri: str
    metric: str
    mode: str
    best_run_id: str | None
    best_config: dict[str, Any]
    best_objective: float | None
    leaderboard: list[dict[str, Any]] = field(default_factory=list)
    best_trial_run_id: str | None = None
    retrained_run_id: str | None = None  # tune.retrain_epochs: the winner trained to the full budget
    retrained_status: str | None = None  # FINISHED, or KILLED when train.time_limit_s stopped it (re-run continues)
    retrained_epochs: int | None = None  # epochs the retrained run has trained
    retrained_objective: float | None = None  # the objective metric of the retrained run at its last epoch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _trial_spec(base: dict[str, Any], values: dict[str, Any], trial_id: str, ctx: dict[str, Any]) -> Spec:
    tree = json.loads(json.dumps(base))
    spaces.apply(tree, values)
    tree["name"] = f"{base['name']}-{trial_id}"
    # Every epoch checkpointed: ASHA may stop a trial after any epoch, and the winner's model comes from its
    # last checkpoint (the base spec's checkpoint_every may exceed the trial's budget).
    tree.setdefault("train", {}).update(
        epochs=ctx["max_epochs"], workers=ctx["workers"], storage_path=ctx["trial_storage"], max_failures=0,
        checkpoint_every=1,
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

    if ctx.get("faults"):
        os.environ[faults.ENV] = ctx["faults"]
    trial_id = tune.get_context().get_trial_id()
    spec = _trial_spec(ctx["base"], config, trial_id, ctx)
    tags = {"mlflow.parentRunId": ctx["parent_run_id"], "genforge.trial_id": trial_id, "genforge.sweep": ctx["sweep"]}
    # The sweep's console gets one line per trial epoch; this trial driver's own lines (print) show
    # only with Ray's output (GENFORGE_VERBOSE=1).
    progress = ctx["progress"].for_run(label=f"trial {trial_id}: ", ticks=False)
    train(spec, echo=print, callbacks=[TuneReportCallback()], tags=tags, finalize=False, progress=progress)


def _check_space(spec: Spec, entries) -> None:
    """Every searched key must make a valid spec: try each distribution's bounds now, not in a trial."""
    base = spec.model_dump(mode="json", by_alias=True)
    for key, e in entries.items():
        for value in (e.loguniform or e.uniform or e.choice or e.grid):
            try:
                spec_from_dict(spaces.apply(json.loads(json.dumps(base)), {key: value}), source="tune.space")
            except SpecError as exc:
                raise SpecError(f"tune.space.{key}: value {value!r} does not make a valid spec ({exc})") from None


def _concurrency(spec: Spec) -> int:
    import ray

    if spec.tune.max_concurrent_trials:
        return spec.tune.max_concurrent_trials
    from genforge.jobs.checks import worker_resources

    resources = ray.cluster_resources()
    per_trial = worker_resources(spec, spec.tune.workers_per_trial)
    return max(1, min(int(resources.get(kind, 0) // amount) for kind, amount in per_trial.items()))


@dataclass
class _Sweep:
    """What a sweep resolves before Ray starts."""

    spec: Spec
    entries: dict[str, Any]
    metric: str
    tracking_uri: str
    storage: Location  # a local path or an object-store URI (training/storage.py)
    name: str
    experiment: str
    image_shape: tuple[int, int, int]
    num_classes: int


def tune_sweep(spec: Spec, echo: Callable[[str], None] = print) -> SweepResult:
    """Run (or resume) the sweep of `spec.tune`: a parent MLflow run, one Tune trial per sampled config,
    the leaderboard, and the best trial's model logged for registration."""
    from mlflow import MlflowClient

    sw = _prepare(spec, echo)
    ensure_ray(spec)
    client = MlflowClient(sw.tracking_uri)
    parent = _open_parent(sw, client, echo)
    with relayed_progress(echo) as progress:
        ctx = _trial_context(sw, parent, progress)
        grid = _fit(sw, ctx, client, parent, echo)
    return _conclude(sw, ctx, grid, client, parent, echo)


def _prepare(spec: Spec, echo: Callable[[str], None]) -> _Sweep:
    """Check the spec, the data and every bound of the search space; train the in-loop extractor once."""
    data, shape, num_classes = preflight(spec)
    entries = spaces.space_entries(spec)
    _check_space(spec, entries)
    metric = spaces.objective(spec)
    uri = resolve_tracking_uri(spec.tracking.uri)
    storage = storage_root(spec, uri)
    if metric == "inloop_fid":  # trials load the extractor from the cache; train it once, here
        from genforge.evaluator.inloop import prepare

        prepare(spec.model_copy(update={"evaluate": spec.evaluate.model_copy(update={"every_epochs": 1})}), data, echo)
    return _Sweep(spec, entries, metric, uri, storage, f"{spec.name}-sweep", spec.tracking.experiment or spec.name,
                  shape, num_classes)


def _open_parent(sw: _Sweep, client, echo: Callable[[str], None]) -> str:
    """The sweep's parent MLflow run: the recorded one, reopened, or a new one."""
    from genforge.tracking.runs import create_run, experiment_id, reopen_run, run_exists

    record_path = sw.storage / sw.name / SWEEP_RECORD
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        same_store = store_identity(record["tracking_uri"]) == store_identity(sw.tracking_uri)
        if same_store and run_exists(client, record["parent_run_id"]):
            parent = record["parent_run_id"]
            reopen_run(client, parent, sw.spec)
            echo(f"[genforge] sweep {sw.name} exists (parent run {parent}): continuing it")
            return parent
    exp_id = experiment_id(client, sw.experiment, sw.tracking_uri)
    parent = create_run(client, exp_id, sw.spec, {"kind": "sweep", "metric": sw.metric}, {"mlflow.runName": sw.name})
    record_path.write_text(json.dumps({"parent_run_id": parent, "tracking_uri": sw.tracking_uri,
                                       "created": time.time()}, indent=2, sort_keys=True))
    echo(f"[genforge] sweep {sw.name}: parent MLflow run {parent} in experiment '{sw.experiment}'")
    return parent


def _trial_context(sw: _Sweep, parent: str, progress: Progress) -> dict[str, Any]:
    """What every trial needs, handed to it through `tune.with_parameters`."""
    return {
        "base": sw.spec.model_dump(mode="json", by_alias=True),
        "parent_run_id": parent,
        "sweep": sw.name,
        "tracking_uri": sw.tracking_uri,
        "experiment": sw.experiment,
        "trial_storage": (sw.storage / sw.name / "trials").uri,
        "max_epochs": sw.spec.tune.max_epochs,
        "workers": sw.spec.tune.workers_per_trial,
        "metric": sw.metric,
        "progress": progress,
        "faults": faults.configured(),  # tests only (genforge/faults.py): this process's variable, for the trials
    }


def _fit(sw: _Sweep, ctx: dict[str, Any], client, parent: str, echo: Callable[[str], None]):
    """Fit the Tuner; on Ctrl-C mark the parent and its running trials KILLED (a re-run resumes them)."""
    import ray
    from ray import tune

    spec = sw.spec
    has_driver_resource = ray.cluster_resources().get(TRIAL_DRIVER, 0) >= 1
    trial_resources = {"CPU": 0, TRIAL_DRIVER: 1} if has_driver_resource else {"CPU": 0.01}
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), trial_resources)
    concurrency = _concurrency(spec)
    tuner = _tuner(spec, trainable, sw.entries, sw.metric, sw.storage, sw.name, concurrency)
    t = spec.tune
    echo(f"[genforge] {t.num_samples} trials, {concurrency} at a time, {t.workers_per_trial} worker(s) each, "
         f"up to {t.max_epochs} epochs; objective {sw.metric} ({t.mode}); search {t.search}, scheduler {t.scheduler}")
    # Tune's own Ctrl-C handler ends fit() quietly, indistinguishable from a finished sweep; without it,
    # Ctrl-C raises KeyboardInterrupt here and the experiment state Tune saves as it goes is resumable.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    if not verbose():
        # Tune 2.60's default output engine prints its experiment header even at verbose=0; the
        # legacy engine it keeps for notebooks prints nothing at verbose=0.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    try:
        return tuner.fit()
    except KeyboardInterrupt:
        for child in client.search_runs([client.get_run(parent).info.experiment_id],
                                        f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'RUNNING'"):
            client.set_terminated(child.info.run_id, "KILLED")
        client.set_terminated(parent, "KILLED")
        echo(f"\n[genforge] sweep {sw.name} interrupted. Re-run the same command to resume it.")
        raise
    except Exception as exc:
        client.set_terminated(parent, "FAILED")
        raise RunError(f"sweep failed: {exc}") from exc


def _conclude(sw: _Sweep, ctx: dict[str, Any], grid, client, parent: str, echo: Callable[[str], None]) -> SweepResult:
    """Close the trials, log the leaderboard, log the best trial's model and finish the parent run."""
    from genforge.tuning.leaderboard import close_trials, log_leaderboard

    t = sw.spec.tune
    rows = close_trials(client, parent, grid, sw.metric, t.mode, t.max_epochs)
    best = next((r for r in rows if r["objective"] is not None and math.isfinite(r["objective"])), None)
    log_leaderboard(client, parent, rows, list(sw.entries), sw.metric, t.mode)
    if best is None:
        client.set_terminated(parent, "FAILED")
        raise RunError(f"sweep {sw.name}: no trial reported {sw.metric}; see the trial runs under parent {parent}")
    if t.retrain_epochs is None:  # retrained, the winner's model comes from the retrained run instead
        _finalize_best(sw.spec, best, ctx, sw.image_shape, sw.num_classes, client, echo)
    client.set_tag(parent, "genforge.best_trial_run_id", best["run_id"])
    client.set_tag(parent, "genforge.best_trial", best["trial_id"])
    client.log_metric(parent, f"best_{sw.metric}", best["objective"])
    result = SweepResult(parent, sw.experiment, sw.tracking_uri, sw.metric, t.mode, best["run_id"], best["config"],
                         best["objective"], rows, best_trial_run_id=best["run_id"])
    if t.retrain_epochs is not None:
        _retrain(sw, best, client, parent, result, echo)
    client.set_tag(parent, "genforge.best_run_id", result.best_run_id)
    client.set_terminated(parent, "FINISHED" if result.retrained_status in (None, "FINISHED") else "KILLED")
    return result


def _retrain(sw: _Sweep, best: dict[str, Any], client, parent: str, result: SweepResult, echo) -> None:
    """Train the winner to `tune.retrain_epochs` (or find it trained) and make it the sweep's result. The parent
    run stays RUNNING meanwhile and ends KILLED or FAILED with the retrain (a re-run continues it)."""
    from genforge.tracking.runs import end_run
    from genforge.tuning.retrain import retrain_best

    try:
        trained = retrain_best(sw.spec, best, list(sw.entries), parent, sw.name, sw.tracking_uri, sw.experiment,
                               client, echo)
    except KeyboardInterrupt:
        end_run(client, parent, "KILLED", "interrupted while retraining the best trial")
        raise
    except Exception as exc:
        end_run(client, parent, "FAILED", f"retraining the best trial failed: {exc}")
        raise
    if "retrain" in client.get_run(parent).data.tags.get("genforge.end_reason", ""):  # a past retrain's failure
        client.delete_tag(parent, "genforge.end_reason")
    client.set_tag(parent, "genforge.retrained_run_id", trained.run_id)
    if trained.metrics.get(sw.metric) is not None:
        client.log_metric(parent, f"retrained_{sw.metric}", trained.metrics[sw.metric])
    result.best_run_id, result.retrained_run_id = trained.run_id, trained.run_id
    result.retrained_status, result.retrained_epochs = trained.status, trained.epochs
    result.retrained_objective = trained.metrics.get(sw.metric)


def _tuner(spec: Spec, trainable, entries, metric: str, storage: Location, sweep: str, concurrency: int):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    root, fs = storage.ray_storage()
    path = (storage / sweep).path
    if tune.Tuner.can_restore(path, storage_filesystem=fs):
        return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, restart_errored=False,
                                  storage_filesystem=fs)
    t = spec.tune
    if t.search == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        if not verbose():  # "A new study created in memory" and the like are Optuna's INFO lines
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        search = OptunaSearch(seed=t.seed)
    else:
        search = BasicVariantGenerator(random_state=t.seed)
    scheduler = (
        ASHAScheduler(time_attr="training_iteration", max_t=t.max_epochs,
                      grace_period=min(t.grace_period, t.max_epochs), reduction_factor=t.reduction_factor)
        if t.scheduler == "asha" else FIFOScheduler()
    )
    return tune.Tuner(
        trainable,
        param_space=spaces.to_tune(entries),
        tune_config=tune.TuneConfig(metric=metric, mode=t.mode, search_alg=search, scheduler=scheduler,
                                    num_samples=t.num_samples, max_concurrent_trials=concurrency),
        # Tune's status table is Ray's own output: shown only when verbose.
        run_config=tune.RunConfig(name=sweep, storage_path=root, storage_filesystem=fs,
                                  verbose=1 if verbose() else 0),
    )


def _finalize_best(spec: Spec, best: dict[str, Any], ctx: dict[str, Any], shape, num_classes, client, echo) -> None:
    """Log the winning trial's model (platform artifact + MLflow sampler) from its last checkpoint."""
    from genforge.training import checkpoint
    from genforge.training.driver import Plan, finalize_run

    if client.get_run(best["run_id"]).data.tags.get("genforge.model_uri"):
        return
    trial_spec = _trial_spec(ctx["base"], best["config"], best["trial_id"], ctx)
    run_dir = Location.parse(ctx["trial_storage"]) / trial_spec.name
    found = checkpoint.latest(run_dir)
    if found is None:
        raise RunError(f"best trial {best['trial_id']} left no checkpoint in {run_dir}")
    plan = Plan(trial_spec, ctx["tracking_uri"], ctx["experiment"], Location.parse(ctx["trial_storage"]), run_dir,
                shape, num_classes)
    echo(f"[genforge] logging the best trial's model ({best['trial_id']}, run {best['run_id']})")
    finalize_run(plan, client, best["run_id"], found)
