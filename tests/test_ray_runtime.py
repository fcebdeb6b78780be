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
