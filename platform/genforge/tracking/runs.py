"""Driver-side MLflow runs: experiment per spec name, params from the resolved spec, resumable keys as tags."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.entities import Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException

from genforge.config import RESUMABLE_KEYS, Spec, flatten
from genforge.tracking.lineage import lineage_tags
from genforge.tracking.uri import artifact_location

TAG_PREFIX = "genforge."


def experiment_id(client: MlflowClient, name: str, tracking_uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location(tracking_uri, name))


def run_exists(client: MlflowClient, run_id: str) -> bool:
    """True for an active run; False only when the store says the run does not exist (or was deleted).
    Anything else (a timeout, a 5xx, 401) is an outage: a RunError naming the store, never "gone"."""
    from genforge.errors import RunError

    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise RunError(f"tracking store {client.tracking_uri} did not answer about run {run_id}: "
                       f"{str(exc).splitlines()[0][:300]}") from exc
    except OSError as exc:
        raise RunError(f"tracking store {client.tracking_uri} is unreachable: {exc}") from exc


def _resumable_tags(spec: Spec) -> list[RunTag]:
    flat = flatten(spec.training_dict())
    return [RunTag(key, str(flat[key])) for key in RESUMABLE_KEYS]


def _log_spec(client: MlflowClient, run_id: str, spec: Spec) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_text(yaml.safe_dump(spec.model_dump(mode="json", by_alias=True), sort_keys=False))
        client.log_artifact(run_id, str(path))


def create_run(
    client: MlflowClient, exp_id: str, spec: Spec, facts: dict[str, Any], extra_tags: dict[str, str] | None = None,
    dataset: Any = None,
) -> str:
    """A new RUNNING run with the whole resolved spec: params (fixed keys), tags (resumable keys, lineage),
    spec.yaml, and the dataset input (lineage.dataset_input) when given."""
    tags = {
        "mlflow.runName": spec.name,
        **lineage_tags(),
        f"{TAG_PREFIX}family": spec.model.family,
        f"{TAG_PREFIX}dataset": spec.data.dataset,
        f"{TAG_PREFIX}spec_fingerprint": spec.fingerprint(),
        **{f"{TAG_PREFIX}{k}": str(v) for k, v in facts.items()},
        **(extra_tags or {}),
    }
    run = client.create_run(exp_id, run_name=tags["mlflow.runName"], tags=tags)
    run_id = run.info.run_id
    try:  # a failure half-way leaves a FAILED run, never one that looks RUNNING forever
        flat = flatten(spec.training_dict())
        params = [Param(k, str(v)) for k, v in flat.items() if k not in RESUMABLE_KEYS]
        for i in range(0, len(params), 100):  # MLflow's batch limit
            client.log_batch(run_id, params=params[i : i + 100])
        client.log_batch(run_id, tags=_resumable_tags(spec))
        _log_spec(client, run_id, spec)
        if dataset is not None:
            client.log_inputs(run_id, datasets=[dataset])
    except BaseException:
        _mark_failed_quietly(client, run_id)
        raise
    return run_id


def _mark_failed_quietly(client: MlflowClient, run_id: str) -> None:
    try:
        client.set_terminated(run_id, status="FAILED")
    except (MlflowException, OSError):
        pass  # the store is the problem; the original error says so


def reopen_run(client: MlflowClient, run_id: str, spec: Spec) -> None:
    """Mark a resumed run RUNNING again and record the resumable keys' new values."""
    client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    client.log_batch(run_id, tags=_resumable_tags(spec))
    _log_spec(client, run_id, spec)


def end_run(client: MlflowClient, run_id: str, status: str, reason: str | None = None) -> None:
    if reason:
        client.set_tag(run_id, f"{TAG_PREFIX}end_reason", reason[:5000])
    client.set_terminated(run_id, status=status)


def metric_history(client: MlflowClient, run_id: str, prefix: str = "train/") -> dict[str, list[tuple[int, float]]]:
    run = client.get_run(run_id)
    return {
        key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        for key in sorted(run.data.metrics)
        if key.startswith(prefix)
    }
