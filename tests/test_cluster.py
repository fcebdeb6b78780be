"""genforge on a real Ray cluster, tracked in a team MLflow server on PostgreSQL.

One module-scoped two-node cluster (a head with token authentication and one worker node, 1 CPU each, so two
1-CPU workers must land on different nodes) and one `mlflow server` whose backend store is a PostgreSQL database
this module creates and drops (skipped, with the reason, where no PostgreSQL answers on 127.0.0.1:5432).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from mlflow_server import MlflowServer
from ray_cluster import RayCluster

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "pipelines" / "quickstart.yaml"
PG = "postgresql://postgres@127.0.0.1:5432"
# The quickstart's stages on sklearn's 8x8 digits with tiny budgets (no retrain: tests/test_sweep_and_pipeline.py).
TINY = ("data.dataset=digits", "model.width=8", "train.batch_size=32", "train.max_steps_per_epoch=4",
        "tune.num_samples=2", "tune.max_epochs=1", "tune.retrain_epochs=null",
        "promote.gates={}",  # a model of 4 steps a trial draws no digits: the shipped gates are not under test here
        "evaluate={samples: 300, seeds: 2, kid_subsets: 10, kid_subset_size: 100, iw_samples: 4, extractor_epochs: 2}")


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    """`mlflow server` on a fresh PostgreSQL database with proxied artifacts; the database is dropped after."""
    psycopg = pytest.importorskip("psycopg", reason="the server extra (psycopg 3) is not installed")
    db = f"genforge_test_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(f"{PG}/postgres", autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE DATABASE {db}")
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL with trust auth on 127.0.0.1:5432 ({exc})")
    server = MlflowServer(tmp_path_factory.mktemp("team-mlflow"), backend_uri=f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}")
    yield server
    server.stop()
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = RayCluster(tmp_path_factory.mktemp("ray-cluster"), head_cpus=1, worker_cpus=1)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """The checkpoint storage every node mounts (one machine: a directory)."""
    return tmp_path_factory.mktemp("shared-storage")


def genforge_cli(args: list[str], cluster: RayCluster, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """`genforge ...` as a user runs it: a fresh process with the cluster's token in RAY_AUTH_TOKEN."""
    environ = {**os.environ, "RAY_AUTH_TOKEN": cluster.token, **env}
    environ.pop("RAY_ADDRESS", None)
    return subprocess.run([str(Path(sys.executable).with_name("genforge")), *args], capture_output=True, text=True,
                          env=environ, timeout=timeout, cwd=ROOT)


def sets(*overrides: str) -> list[str]:
    return [arg for value in overrides for arg in ("--set", value)]


def train_worker_nodes(cluster: RayCluster, job_id: str) -> set[str]:
    """Nodes that ran Ray Train workers of a job (dead actors stay listed in the state API)."""
    url = (f"{cluster.address}/api/v0/actors?detail=1&limit=1000&filter_keys=class_name&filter_predicates=%3D"
           f"&filter_values=RayTrainWorker")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {cluster.token}"})
    with urllib.request.urlopen(request, timeout=30) as r:
        actors = json.load(r)["data"]["result"]["result"]
    return {a["node_id"] for a in actors if a.get("job_id") == job_id or job_id is None}


def job_ids(cluster: RayCluster) -> set[str]:
    listed = genforge_cli(["jobs", "list", "--address", cluster.address, "--json"], cluster, timeout=60)
    assert listed.returncode == 0, listed.stderr
    return {j["submission_id"] for j in json.loads(listed.stdout.strip().splitlines()[-1])}


def submit_args(cluster: RayCluster, server: MlflowServer, storage: Path, *overrides: str) -> list[str]:
    return ["submit", str(QUICKSTART), "--address", cluster.address,
            *sets(f"tracking.uri={server.url}", f"train.storage_path={storage}", *TINY, *overrides)]


def submit_training(cluster: RayCluster, server: MlflowServer, storage: Path, name: str,
                    *train: str) -> tuple[str, list[str]]:
    """`genforge submit` (not followed) of the quickstart's base configuration as a training-only job named
    `name`; (submission id, the overrides it used)."""
    overrides = [f"tracking.uri={server.url}", f"train.storage_path={storage}", *TINY, "stages=[train]",
                 f"name={name}", "train.max_steps_per_epoch=16", *train]
    submitted = genforge_cli(["submit", str(QUICKSTART), "--address", cluster.address, *sets(*overrides), "--json"],
                             cluster)
    assert submitted.returncode == 0, submitted.stderr
    return json.loads(submitted.stdout.strip().splitlines()[-1])["submission_id"], overrides


BAD_SUBMISSIONS = {
    "no answer": (["--address", "http://127.0.0.1:9"], {}, "no Ray dashboard answers there"),
    "no token": ([], {"RAY_AUTH_TOKEN": "", "RAY_AUTH_TOKEN_PATH": "/nonexistent"}, "requires a token"),
    "wrong token": ([], {"RAY_AUTH_TOKEN": "not-the-token"}, "refused the token"),
    "sqlite tracking": (sets("tracking.uri=sqlite:///mlflow.db"), {}, "tracking.uri: sqlite:///mlflow.db is a local"),
    "password in uri": (sets("tracking.uri=http://alice:s3cret@127.0.0.1:5000"), {}, "carries a password"),
    "no storage": (sets("train.storage_path=null"), {}, "train.storage_path: unset"),
    "relative storage": (sets("train.storage_path=runs"), {}, "train.storage_path: 'runs' is relative"),
    "too many workers": (sets("tune.workers_per_trial=3"), {}, "needs 3 CPU; the cluster at"),
    "gpus it never has": (sets("train.use_gpu=true"), {}, "train.use_gpu: the job needs 1 GPU"),
}


def test_bad_submissions_are_refused_before_anything_is_submitted(cluster, team_server, shared, monkeypatch, capsys):
    """Each is one line on stderr and exit 2, and the cluster gains no job (capacity probes aside)."""
    from pipelines.cli import main

    before = job_ids(cluster)
    for case, (extra, env, expected) in BAD_SUBMISSIONS.items():
        monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.token)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        with pytest.raises(SystemExit) as exit_info:
            main([*submit_args(cluster, team_server, shared), *extra])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(err) == 1 and expected in err[0], (case, err)
    assert job_ids(cluster) == before


def test_the_quickstart_submitted_both_ways_lands_in_the_team_server(cluster, team_server, shared, tmp_path):
    """`genforge submit --follow` (the quickstart's sweep, its trials on both nodes) and plain `ray job submit --
    genforge run ...` (the quickstart's base configuration trained on 2 workers; its evaluation and registration are the
    same code the first job ran) both succeed on the two-node cluster; runs, the version and the alias are in the
    PostgreSQL-backed server, with their lineage."""
    from mlflow import MlflowClient

    name = f"digits-vae-{uuid.uuid4().hex[:6]}"
    t0 = time.perf_counter()
    ours = genforge_cli([*submit_args(cluster, team_server, shared, f"register.model_name={name}"), "--follow",
                         "--json"], cluster)
    submit_s = time.perf_counter() - t0
    assert ours.returncode == 0, ours.stderr[-3000:]
    outcome = json.loads(ours.stdout.strip().splitlines()[-1])
    assert outcome["status"] == "SUCCEEDED" and "=== stage: promote ===" in ours.stderr
    assert len(train_worker_nodes(cluster, outcome["ray_job_id"])) == 2  # the trials ran on both nodes

    # The plain Ray CLI way: the spec in a working directory, genforge as the cluster has it installed.
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "quickstart.yaml").write_text(QUICKSTART.read_text())
    ray_cli = [str(Path(sys.executable).with_name("ray")), "job", "submit", "--address", cluster.address,
               "--working-dir", str(tmp_path / "job"), "--", "genforge", "run", "quickstart.yaml",
               *sets(f"tracking.uri={team_server.url}", f"train.storage_path={shared / 'plain'}", *TINY,
                     f"register.model_name={name}", "name=quickstart-plain",
                     # its base configuration instead of a sweep: one 2-worker run over both nodes
                     "stages=[train]", "train.epochs=1")]
    plain = subprocess.run(ray_cli, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                           env={**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.token})
    assert plain.returncode == 0 and "succeeded" in plain.stdout, plain.stdout[-3000:] + plain.stderr[-2000:]

    client = MlflowClient(team_server.url)
    (plain_run,) = client.search_runs([client.get_experiment_by_name("quickstart-plain").experiment_id])
    assert plain_run.info.status == "FINISHED" and plain_run.data.tags["genforge.model_uri"]
    versions = client.search_model_versions(f"name = '{name}'")
    assert [int(v.version) for v in versions] == [1]
    champion = client.get_model_version_by_alias(name, "champion")
    for v in versions:
        run = client.get_run(v.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["genforge.version"] and len(run.data.tags["genforge.constraints_sha256"]) == 64
        assert run.data.tags["mlflow.source.git.commit"] != "unknown"
        assert run.inputs.dataset_inputs[0].dataset.digest == v.tags["dataset_fingerprint"] != "unknown"
        assert v.tags["genforge_version"] == run.data.tags["genforge.version"]
    assert champion.version in {v.version for v in versions}
    print(f"\nsubmitted quickstart (digits, tiny budgets) with genforge submit --follow: {submit_s:.1f} s")


def test_two_workers_on_two_nodes_and_a_lost_node_then_a_resubmission_continues_the_run(cluster, team_server,
                                                                                         shared, monkeypatch, capsys):
    """A 2-worker training job spans both nodes; SIGKILL the worker node after the first checkpoint and the job
    fails; a new node joins, and the same spec submitted again continues the same MLflow run to the end. The
    re-submission goes through the Kubeflow train component (what `pipeline compile --ray-address http://...`
    runs), which submits a Ray job as `genforge submit` does and hands on the run id from the job's result.

    The first job asks for more epochs than it could ever train (a tiny epoch takes a fraction of a second: a
    4-epoch job once finished before its node's workers died); the re-submission sets `train.epochs` (a resumable
    key) two past the checkpoint the run resumes from."""
    import yaml
    from mlflow import MlflowClient

    from genforge.training import checkpoint
    from pipelines import kubeflow

    name = f"lost-node-{uuid.uuid4().hex[:6]}"
    job, overrides = submit_training(cluster, team_server, shared, name, "train.workers=2", "train.epochs=1000",
                                     "train.checkpoint_every=1")
    deadline = time.monotonic() + 300
    while checkpoint.latest(shared / name) is None:
        assert time.monotonic() < deadline, genforge_cli(["jobs", "logs", job, "--address", cluster.address],
                                                         cluster).stdout[-3000:]
        time.sleep(0.25)
    cluster.worker.kill()
    followed = genforge_cli(["jobs", "logs", job, "--address", cluster.address, "--follow"], cluster)
    assert followed.returncode != 0, followed.stdout[-3000:]  # the job failed with its node
    lost_at = checkpoint.latest(shared / name).meta["position"]["epoch"]  # where the re-submission resumes
    assert len(train_worker_nodes(cluster, _ray_job_id(cluster, job))) == 2  # its two workers had two nodes

    cluster.worker = cluster.add_worker(1)
    monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.token)
    monkeypatch.setenv("GENFORGE_JOBS_ADDRESS", cluster.address)
    epochs = lost_at + 2
    run_id, tracking_uri = kubeflow.train(yaml.safe_dump(yaml.safe_load(QUICKSTART.read_text())),
                                          [*overrides, f"train.epochs={epochs}"])

    said = capsys.readouterr().out  # the job's log, streamed by the component
    assert f"at epoch {lost_at}, step {16 * lost_at}" in said, said[-3000:]  # continued, not retrained
    client = MlflowClient(team_server.url)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert [r.info.run_id for r in runs] == [run_id] and tracking_uri == team_server.url
    assert runs[0].info.status == "FINISHED" and runs[0].data.tags["genforge.finalized_epochs"] == str(epochs)
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert len(steps) == len(set(steps))  # nothing logged twice across the loss and the resumption


def _ray_job_id(cluster: RayCluster, submission_id: str) -> str:
    status = genforge_cli(["jobs", "status", submission_id, "--address", cluster.address, "--json"], cluster)
    return json.loads(status.stdout.strip().splitlines()[-1])["ray_job_id"]


def test_jobs_stop_lets_the_run_checkpoint_and_end_killed(cluster, team_server, shared):
    """`genforge jobs stop`: Ray sends the job's driver SIGTERM and (genforge asked it to) waits for it; the run
    writes a checkpoint, ends KILLED with its stop reason, and the job is listed STOPPED."""
    from mlflow import MlflowClient

    from genforge.training import checkpoint

    name = f"stop-me-{uuid.uuid4().hex[:6]}"
    job, _ = submit_training(cluster, team_server, shared, name, "train.workers=1", "train.epochs=1000",
                             "train.checkpoint_every=500")
    client = MlflowClient(team_server.url)
    deadline = time.monotonic() + 300
    while not (client.get_experiment_by_name(name) and client.search_runs(
            [client.get_experiment_by_name(name).experiment_id], "metrics.`train/loss` > 0")):
        assert time.monotonic() < deadline, "the job never started training"
        time.sleep(0.5)
    stopped = genforge_cli(["jobs", "stop", job, "--address", cluster.address, "--json"], cluster)
    assert stopped.returncode == 0 and json.loads(stopped.stdout.strip().splitlines()[-1])["status"] == "STOPPED"
    (run,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert run.info.status == "KILLED" and run.data.tags["genforge.stop_reason"] == "terminated"
    found = checkpoint.latest(shared / name)
    assert found is not None and found.meta["position"]["epoch"] < 500  # written at the stop, not by schedule
    assert job in job_ids(cluster)
