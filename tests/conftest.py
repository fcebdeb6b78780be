"""Shared fixtures: one Ray instance per test session, one MLflow store, trained runs cached by family."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest

from genforge.families import FAMILIES as CATALOGUE

FAMILIES = tuple(CATALOGUE)  # every test parametrised over families follows the catalogue

# The object-storage tests talk to an S3-compatible server on loopback (moto, test_object_storage.py). Ray
# workers inherit the environment of the process that starts Ray, so its fake credentials are set before any
# Ray starts; AWS_EC2_METADATA_DISABLED keeps clients from probing a cloud metadata service.
for _key, _value in {"AWS_ACCESS_KEY_ID": "genforge-test", "AWS_SECRET_ACCESS_KEY": "genforge-test",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(_key, _value)


def tiny_spec(name: str, family: str = "vae", **train: Any) -> dict[str, Any]:
    """A spec small enough to train in seconds on sklearn's 8x8 digits."""
    return {
        "name": name,
        "data": {"dataset": "digits"},
        "model": {"family": family, "latent_dim": 8, "width": 8},
        "train": {"epochs": 2, "batch_size": 32, "workers": 1, "max_steps_per_epoch": 6, "log_every_steps": 2, **train},
    }


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Extractors and reference statistics go to a per-session cache (workers inherit the variable)."""
    path = tmp_path_factory.mktemp("genforge-cache")
    os.environ["GENFORGE_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def ray_session(private_cache):
    """One local Ray instance for every test that trains (ray.init costs seconds)."""
    import ray

    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")  # as a local genforge sets it: one node
    # No runtime_env: the workers inherit this environment (GENFORGE_CACHE is set), and a runtime_env would start
    # each worker process through Ray's runtime-env setup.
    ray.init(num_cpus=2, resources={"trial_driver": 8}, logging_level="warning")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def moto_s3():
    """(URI query of connection options, pyarrow filesystem) of a fresh moto S3 server on loopback: the real S3
    protocol over HTTP, only the server a stand-in. Each test module creates its own bucket."""
    from moto.server import ThreadedMotoServer
    from pyarrow.fs import S3FileSystem

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    fs = S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                      allow_bucket_creation=True)
    yield f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1", fs
    server.stop()


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    """Directory of the session's MLflow SQLite store (checkpoints go beside it)."""
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="session")
def tracking_uri(store: Path) -> str:
    return f"sqlite:///{store / 'mlflow.db'}"


@pytest.fixture(scope="session")
def train_spec(ray_session, tracking_uri) -> Callable[..., Any]:
    """Train a spec dict in-process on the session's Ray; returns genforge's TrainResult."""
    from genforge.config import spec_from_dict
    from genforge.training.driver import train

    def run(spec: dict[str, Any], overrides: tuple[str, ...] = (), echo: Callable[[str], None] | None = None) -> Any:
        spec = {**spec, "tracking": {"uri": tracking_uri}}
        return train(spec_from_dict(spec, overrides), echo=echo or (lambda msg: None))

    return run


@pytest.fixture(scope="session")
def family_runs(train_spec) -> Callable[[str], Any]:
    """Each family trained once, with 2 workers (DDP under test), shared by every test that inspects it."""
    cache: dict[str, Any] = {}

    def get(family: str) -> Any:
        if family not in cache:
            cache[family] = train_spec(tiny_spec(f"family-{family}", family, workers=2))
        return cache[family]

    return get


@pytest.fixture(scope="session")
def client(tracking_uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)
