"""Logging a domain extractor to MLflow (experiment `genforge-extractors`), once per content hash."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient

from genforge.tracking.runs import experiment_id

EXPERIMENT = "genforge-extractors"


def log_extractor(tracking_uri: str, meta: dict, path: Path) -> str:
    client = MlflowClient(tracking_uri)
    exp = experiment_id(client, EXPERIMENT, tracking_uri)
    found = client.search_runs([exp], f"tags.`genforge.content_hash` = '{meta['content_hash']}'", max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(exp, run_name=f"domain-{meta['dataset']}", tags={
        "genforge.content_hash": meta["content_hash"], "genforge.dataset": meta["dataset"],
        "genforge.dataset_fingerprint": meta["dataset_fingerprint"],
    })
    run_id = run.info.run_id
    for key in ("dataset", "epochs", "seed", "num_classes"):
        client.log_param(run_id, key, meta[key])
    client.log_metric(run_id, "test_accuracy", meta["test_accuracy"])
    client.log_metric(run_id, "train_seconds", meta["train_seconds"])
    client.log_artifacts(run_id, str(path), "extractor")
    client.set_terminated(run_id, "FINISHED")
    return run_id
