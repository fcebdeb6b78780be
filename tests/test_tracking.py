"""Tracking glue: absolute URIs for workers, storage beside the store, metric rows never logged twice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from genforge.tracking.uri import MLFLOW_DEFAULT_URI, default_storage_path, resolve_tracking_uri


def test_default_uri_is_mlflows_own_default_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = resolve_tracking_uri(None)
    assert uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    # MLflow's own default, asked in a fresh process (other tests set the global URI in this one).
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    code = "import mlflow; print(mlflow.get_tracking_uri())"
    mlflows = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env).stdout
    assert mlflows.strip() in (uri, MLFLOW_DEFAULT_URI)


def test_env_and_spec_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:///rel/x.db") == f"sqlite:///{tmp_path.resolve() / 'rel/x.db'}"
    assert resolve_tracking_uri("runs") == (tmp_path / "runs").resolve().as_uri()


def test_storage_beside_the_store(tmp_path):
    assert default_storage_path(f"sqlite:///{tmp_path}/m.db") == tmp_path / "genforge_runs"
    assert default_storage_path("http://127.0.0.1:5000") == Path.cwd().resolve() / "genforge_runs"


def test_logger_never_logs_a_step_twice(tmp_path):
    from mlflow import MlflowClient

    from genforge.tracking.logger import RunLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    first = RunLogger(uri, run_id)
    for step in range(1, 6):
        first.log_metrics({"loss": float(step)}, step)
    first.log_metrics({"val": 1.0}, 4)
    assert first.close()
    # A restart from a checkpoint at step 2 replays steps 3..7.
    second = RunLogger(uri, run_id)
    written = [second.log_metrics({"loss": 10.0 + step, "val": 2.0}, step) for step in range(3, 8)]
    assert written == [0, 0, 1, 2, 2]  # loss new from 6; val new from 5
    assert second.close()
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert steps == [1, 2, 3, 4, 5, 6, 7]
    assert [m.step for m in client.get_metric_history(run_id, "val")] == [4, 5, 6, 7]
