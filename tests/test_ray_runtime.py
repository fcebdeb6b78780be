"""What genforge sets in the environment before Ray Train starts a run (read by Train's controller at run start)."""

from __future__ import annotations

import os

import pytest
from conftest import tiny_spec

from genforge.config import spec_from_dict
from genforge.ray_runtime import HEALTH_CHECK_INTERVAL_S, ensure_ray


@pytest.fixture
def initialised(monkeypatch):
    """Ray taken as already running here, so ensure_ray only prepares the environment."""
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    for key in ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "RAY_TRAIN_ENABLE_PRINT_PATCH"):
        monkeypatch.delenv(key, raising=False)


def test_train_polls_its_workers_often_enough_that_a_run_ends_promptly(initialised):
    """Ray Train's 2 s default poll kept about 6 s of every run's end waiting (ray_runtime.py)."""
    ensure_ray(spec_from_dict(tiny_spec("env")))
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == HEALTH_CHECK_INTERVAL_S
    assert 0 < float(HEALTH_CHECK_INTERVAL_S) < 2.0
    assert os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] == "0"


def test_a_user_s_own_poll_interval_wins(initialised, monkeypatch):
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "3")
    ensure_ray(spec_from_dict(tiny_spec("env")))
    assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "3"


@pytest.fixture
def init_calls(monkeypatch):
    """ray.init recorded instead of run; `existing` makes the first call find a running cluster, as ray.init does
    when it is given resources to start one with and one is already up."""
    import ray

    from genforge import ray_runtime

    calls: list[dict] = []
    state = {"existing": False}

    def fake_init(**kwargs):
        calls.append(kwargs)
        if state["existing"] and "resources" in kwargs:
            raise ValueError("When connecting to an existing cluster, resources must not be provided.")

    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("GENFORGE_CACHE", "/cache")
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    return calls, state, ray_runtime._init_ray


def test_a_local_ray_started_here_passes_no_runtime_env(init_calls):
    """Its workers inherit this process's environment; a runtime_env would route every worker start through Ray's
    runtime-env setup (about 0.45 s more a worker process, ten or so a run)."""
    calls, _, init = init_calls
    init()
    assert len(calls) == 1 and "runtime_env" not in calls[0] and calls[0]["resources"] == {"trial_driver": 64}


@pytest.mark.parametrize("where", ["existing local cluster", "RAY_ADDRESS"])
def test_joining_a_running_cluster_forwards_genforge_s_variables(init_calls, monkeypatch, where):
    calls, state, init = init_calls
    if where == "RAY_ADDRESS":
        monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    else:
        state["existing"] = True
    init()
    env_vars = calls[-1]["runtime_env"]["env_vars"]
    assert env_vars["GENFORGE_CACHE"] == "/cache" and env_vars["RAY_TRAIN_ENABLE_PRINT_PATCH"] == "0"
    assert "resources" not in calls[-1]
