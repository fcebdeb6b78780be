"""`tune.retrain_epochs`: after a sweep of short trials, train the winning configuration to its full budget.

The retrained run is an ordinary training run (the same driver as `genforge train`) of the base spec with the best
trial's sampled values applied and `train.epochs = tune.retrain_epochs`, named `{name}-{trial_id}-retrain`, in the
sweep's experiment, nested under the sweep's parent run (`mlflow.parentRunId`) and tagged with the trial it retrains
(`genforge.retrain_of` = the trial's run id, `genforge.retrain_trial_id`). Its name depends on the winner, so
re-running the sweep finds it through the driver's run record: a finished retrain is reused as it is, an interrupted
one continues from its last checkpoint, and raising `tune.retrain_epochs` extends it like raising `train.epochs`.
The leaderboard keeps ranking the trials only (leaderboard.close_trials skips the retrained run).
"""

from __future__ import annotations

import json
from typing import Any, Callable

import yaml

from genforge.config import Spec, spec_from_dict
from genforge.training.driver import TrainResult
from genforge.tuning import space as spaces

RETRAIN_OF = "genforge.retrain_of"  # on the retrained run: the winning trial's run id


def retrain_name(spec: Spec, trial_id: str) -> str:
    return f"{spec.name}-{trial_id}-retrain"


def trial_config(client, best: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """The winning trial's sampled values: Tune's record of them, else the values its MLflow run logged as params
    (searched keys are never resumable keys, so every one of them is a param)."""
    if best["config"] or not keys:
        return dict(best["config"])
    params = client.get_run(best["run_id"]).data.params
    return {k: yaml.safe_load(params[k]) for k in keys if k in params}


def retrain_spec(spec: Spec, config: dict[str, Any], trial_id: str, tracking_uri: str, experiment: str) -> Spec:
    """The base spec with the trial's values, trained for `tune.retrain_epochs` under its own name."""
    tree = json.loads(json.dumps(spec.model_dump(mode="json", by_alias=True)))
    spaces.apply(tree, config)
    tree["name"] = retrain_name(spec, trial_id)
    tree.setdefault("train", {})["epochs"] = spec.tune.retrain_epochs
    tree["tracking"] = {"uri": tracking_uri, "experiment": experiment}
    return spec_from_dict(tree, source=f"retrain of trial {trial_id}")


def describe(config: dict[str, Any]) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v:.4g}" if isinstance(v, float) else f"{k.rsplit('.', 1)[-1]}={v}"
                     for k, v in sorted(config.items()))


def retrain_best(spec: Spec, best: dict[str, Any], keys: list[str], parent: str, sweep: str, tracking_uri: str,
                 experiment: str, client, echo: Callable[[str], None]) -> TrainResult:
    """Train (or continue, or find finished) the retrained run of the sweep's best trial."""
    from genforge.training.driver import train

    config = trial_config(client, best, keys)
    rspec = retrain_spec(spec, config, best["trial_id"], tracking_uri, experiment)
    echo(f"[genforge] retrain: best trial {best['trial_id']} ({describe(config)}) for {spec.tune.retrain_epochs} "
         f"epochs as run '{rspec.name}' ({rspec.train.workers} worker(s))")
    tags = {"mlflow.parentRunId": parent, RETRAIN_OF: best["run_id"], "genforge.retrain_trial_id": best["trial_id"],
            "genforge.sweep": sweep}
    return train(rspec, echo=echo, tags=tags)
