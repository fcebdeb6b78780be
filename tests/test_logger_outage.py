"""A tracking server that goes away mid-run: rows are buffered, retried and land exactly once.

Real `mlflow server` processes behind a loopback proxy (tests/mlflow_server.py): the server answers 503 for a
while, then is stopped and a new one started on the same database; the proxy is re-pointed at it, as a
Service is at a restarted pod. Logging never waits for the server."""

from __future__ import annotations

import time

import pytest
from mlflow_server import FaultProxy, MlflowServer

pytestmark = pytest.mark.slow

KEYS = ("train/loss", "train/kl", "images_per_s")


def _log(logger, steps: range) -> float:
    """Log the steps' rows; returns the longest a single call took."""
    longest = 0.0
    for step in steps:
        t = time.perf_counter()
        logger.log_metrics({k: step + i / 10 for i, k in enumerate(KEYS)}, step)
        longest = max(longest, time.perf_counter() - t)
    return longest


def test_rows_survive_a_5xx_spell_and_a_server_restart(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from genforge.tracking.logger import RunLogger

    # The client's own retries would only slow the test down: the logger retries by itself.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    db = f"sqlite:///{tmp_path / 'server.db'}"
    first = MlflowServer(tmp_path, backend_uri=db)
    outage = {"on": False}
    proxy = FaultProxy(first.url, fail=lambda method, path: 503 if outage["on"] else None)
    second = None
    try:
        client = MlflowClient(proxy.url)
        run_id = client.create_run(client.create_experiment("outage")).info.run_id
        lines: list[str] = []
        logger = RunLogger(proxy.url, run_id, say=lines.append)
        _log(logger, range(0, 20))
        assert logger.flush(60)

        outage["on"] = True  # a spell of 503s
        assert _log(logger, range(20, 40)) < 0.5  # training does not wait for the server
        time.sleep(1.5)
        assert logger.pending > 0
        first.stop()  # and then the server goes away altogether
        outage["on"] = False
        _log(logger, range(40, 50))
        time.sleep(1.0)
        assert logger.pending > 0
        second = MlflowServer(tmp_path, backend_uri=db)  # back, on the same database
        proxy.upstream = second.url
        _log(logger, range(50, 60))
        assert logger.close(120), lines

        check = MlflowClient(second.url)
        for i, key in enumerate(KEYS):
            rows = sorted((m.step, m.value) for m in check.get_metric_history(run_id, key))
            assert rows == [(step, step + i / 10) for step in range(60)], key  # none lost, none doubled
        assert any("buffering" in line for line in lines) and any("answers again" in line for line in lines), lines
    finally:
        proxy.stop()
        first.stop()
        if second is not None:
            second.stop()


def test_a_step_at_or_below_the_watermark_is_dropped(tmp_path):
    from mlflow import MlflowClient

    from genforge.tracking.logger import RunLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    logger = RunLogger(uri, run_id)
    assert logger.log_metrics({"loss": 1.0}, 3) == 1
    assert logger.log_metrics({"loss": 2.0}, 3) == 0 and logger.log_metrics({"loss": 2.0}, 2) == 0
    assert logger.close(30)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [(3, 1.0)]
