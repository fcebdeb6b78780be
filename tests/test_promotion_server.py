"""Promotion against a real `mlflow server` behind a proxy that delays requests and injects errors.

Many promoters at once, each request delayed by up to a second and a half, must leave the alias on the best
version; a 5xx on any registry read must never promote a worse candidate (it aborts, and nothing moves).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import pytest
from mlflow_server import FaultProxy, MlflowServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    yield srv
    srv.stop()


@pytest.fixture()
def model(server, request):
    """A fresh registered model on the server with a helper that adds versions carrying evaluation tags."""
    from mlflow import MlflowClient

    client = MlflowClient(server.url)
    name = f"m-{len(request.node.name)}-{time.time_ns()}"
    run_id = client.create_run(client.create_experiment(f"e-{name}-{time.time_ns()}")).info.run_id
    client.create_registered_model(name)

    def add(fid: float, std: float = 0.01) -> int:
        v = client.create_model_version(name, source=f"runs:/{run_id}/sampler", run_id=run_id,
                                        tags={"fid": repr(fid), "fid_std": repr(std), "protocol_hash": "p",
                                              "protocol_name": "fid1k-domain-train"})
        return int(v.version)

    return client, name, add


def _holder(client, name: str) -> int:
    return int(client.get_registered_model(name).aliases["champion"])


def _promote_at(uri: str, name: str, version: int, start: float) -> None:
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # a slow proxy, not a flaky one: no retry storms
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "60"
    from genforge.model_registry.promotion import promote

    while time.time() < start:
        time.sleep(0.001)
    promote(uri, name, version)


@pytest.mark.parametrize("reads_s,writes_s", [(1.5, 1.5), (0.2, 2.5)], ids=["uniform", "slow-writes"])
def test_concurrent_promoters_with_random_latency_leave_the_best(server, model, reads_s, writes_s):
    """Slow writes are the adversarial case for any read-back scheme: a write lands after others have read."""
    client, name, add = model
    fids = [9.0, 4.0, 7.0, 5.0, 8.0, 6.0, 4.5, 10.0]
    versions = [add(f) for f in fids]
    proxy = FaultProxy(server.url, max_delay_s=reads_s, max_write_delay_s=writes_s, seed=7)
    try:
        start = time.time() + 3.0
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_promote_at, args=(proxy.url, name, v, start)) for v in versions]
        for p in procs:
            p.start()
        for p in procs:
            p.join(300)
            assert p.exitcode == 0
    finally:
        proxy.stop()
    assert _holder(client, name) == versions[fids.index(min(fids))]
    decided = [
        client.get_model_version(name, str(v)).tags.get("genforge.promotion.champion.decision") for v in versions
    ]
    assert None not in decided  # every promoter recorded its decision


ENDPOINTS = ["registered-models/get", "registered-models/alias", "model-versions/search", "model-versions/get"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_5xx_on_any_registry_read_never_promotes_a_worse_candidate(server, model, endpoint, monkeypatch):
    from genforge.errors import RunError
    from genforge.model_registry.promotion import promote

    client, name, add = model
    champion, worse = add(5.0), add(50.0)
    assert promote(server.url, name, champion).promoted
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    proxy = FaultProxy(server.url, fail=lambda method, path: 503 if endpoint in path and method == "GET" else None)
    try:
        try:
            decision = promote(proxy.url, name, worse)
        except RunError as exc:  # an outage aborts, naming what failed
            assert "MLflow registry" in str(exc)
        else:
            assert not decision.promoted and decision.previous == champion
    finally:
        proxy.stop()
    assert _holder(client, name) == champion
