"""What `genforge submit` decides from the spec alone (pure functions; the cluster itself is in test_cluster.py)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from conftest import tiny_spec

from genforge.config import spec_from_dict
from genforge.errors import SpecError
from genforge.jobs import checks, client
from genforge.jobs.package import package_job

RAY = "http://10.0.0.5:8265"


def spec(**sections):
    tree = tiny_spec("job")
    for section, values in sections.items():
        tree[section] = {**tree.get(section, {}), **values} if isinstance(values, dict) else values
    return spec_from_dict(tree)


@pytest.mark.parametrize("uri, env, message", [
    (None, None, "tracking.uri: unset"),
    ("sqlite:///mlflow.db", None, "is a local store"),
    ("file:///tmp/mlruns", None, "is a local store"),
    ("/tmp/mlruns", None, "is a local store"),
    (None, "sqlite:////tmp/m.db", "MLFLOW_TRACKING_URI: sqlite:////tmp/m.db is a local store"),
    ("https://alice:pw@mlflow.example.com", None, "carries a password"),
    ("postgresql://mlflow:pw@db/mlflow", None, "carries a password"),
    ("http://127.0.0.1:5000", None, "loopback address"),
])
def test_tracking_uris_a_job_cannot_use_are_refused(uri, env, message):
    with pytest.raises(SpecError, match=message):
        checks.job_tracking_uri(spec(tracking={"uri": uri}), env, RAY)


def test_a_shared_tracking_server_passes_and_loopback_is_fine_for_a_loopback_cluster():
    assert checks.job_tracking_uri(spec(tracking={"uri": "http://mlflow:5000"}), None, RAY) == "http://mlflow:5000"
    assert checks.job_tracking_uri(spec(), "http://mlflow:5000", RAY) == "http://mlflow:5000"
    local = "http://127.0.0.1:5000"
    assert checks.job_tracking_uri(spec(tracking={"uri": local}), None, "http://127.0.0.1:8265") == local


@pytest.mark.parametrize("path, ok", [(None, False), ("runs", False), ("./runs", False), ("/mnt/genforge", True),
                                      ("s3://bucket/genforge", True)])
def test_storage_must_be_shared_and_outlive_the_job(path, ok):
    base = spec()  # (a copy: the spec's own validation of URIs is config's business, not this rule's)
    s = base.model_copy(update={"train": base.train.model_copy(update={"storage_path": path})})
    if ok:
        assert checks.job_storage_path(s) == path
    else:
        with pytest.raises(SpecError, match="train.storage_path"):
            checks.job_storage_path(s)


def test_resources_needed_by_a_training_run_and_by_a_sweep():
    assert checks.resources_needed(spec(train={"workers": 4})) == {"CPU": 4.0}
    assert checks.resources_needed(spec(train={"workers": 2, "use_gpu": True})) == {"CPU": 2.0, "GPU": 2.0}
    sweep = spec(stages=["tune"], tune={"workers_per_trial": 2}, train={"workers": 4})
    assert checks.resources_needed(sweep) == {"CPU": 2.0}  # one trial's worth; the sweep trains no base run
    # train.cpus_per_worker: each worker reserves that many CPUs, in a run and in each sweep trial
    assert checks.resources_needed(spec(train={"workers": 2, "cpus_per_worker": 3})) == {"CPU": 6.0}
    sweep = spec(stages=["tune"], tune={"workers_per_trial": 1}, train={"workers": 1, "cpus_per_worker": 2})
    assert checks.resources_needed(sweep) == {"CPU": 2.0}


def test_capacity_counts_what_the_autoscaler_may_add():
    now_no_gpus = checks.Capacity({"CPU": 4.0}, autoscaler_max={"CPU": 64.0, "GPU": 4.0})
    checks.check_capacity({"CPU": 2.0, "GPU": 2.0}, now_no_gpus, RAY)  # the GPU group scales up from 0
    with pytest.raises(SpecError, match=r"needs 8 GPU; .* has 0 \(its autoscaler may add up to 4\)"):
        checks.check_capacity({"GPU": 8.0}, now_no_gpus, RAY)
    per_worker = r"train.workers \(tune.workers_per_trial\) x train.cpus_per_worker"
    with pytest.raises(SpecError, match=per_worker + r": the job needs 5 CPU; .* has 4,"):
        checks.check_capacity({"CPU": 5.0}, checks.Capacity({"CPU": 4.0}), RAY)  # no autoscaler: now is all


def test_the_address_and_token_are_found_where_ray_looks(monkeypatch, tmp_path):
    for key in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(SpecError, match="no Ray cluster given"):
        client.resolve_address(None)
    with pytest.raises(SpecError, match="give the Ray dashboard's URL"):
        client.resolve_address("10.0.0.5:6379")
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265/")
    assert client.resolve_address(None) == "http://head:8265"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert client.auth_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-file\n")
    assert client.auth_token() == "from-file"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert client.auth_token() == "from-env"


def test_a_job_package_ships_the_code_and_spec_and_no_secret(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter3")
    spec_file = tmp_path / "quick start.yaml"
    spec_file.write_text("name: x\n")
    modules = [Path("platform/genforge"), Path("evaluation"), Path("pipelines")]
    package = package_job(spec_file, ("train.epochs=2", "tune.space={a: 1}"), modules, {"spec": "x"},
                          tracking_uri="http://mlflow:5000")
    try:
        assert shlex.split(package.entrypoint) == ["python", "-m", "pipelines", "run", "quick start.yaml", "--set",
                                                   "train.epochs=2", "--set", "tune.space={a: 1}", "--set",
                                                   "tracking.uri=http://mlflow:5000"]
        assert (Path(package.runtime_env["working_dir"]) / "quick start.yaml").read_text() == "name: x\n"
        assert package.runtime_env["py_modules"] == [str(m) for m in modules]
        assert set(package.runtime_env["env_vars"]) == {"GENFORGE_GIT_COMMIT", "GENFORGE_CONSTRAINTS_SHA256",
                                                        "RAY_JOB_STOP_WAIT_TIME_S"}
        assert package.runtime_env["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"] == "30"
        everything = json.dumps([package.entrypoint, package.runtime_env, package.metadata])
        assert "hunter" not in everything
    finally:
        package.cleanup()
    assert not Path(package.runtime_env["working_dir"]).exists()
