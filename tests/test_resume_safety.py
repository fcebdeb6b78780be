"""A run directory is never moved aside on a blip: only a run the store says does not exist lets a new run
start; a differently spelled URI of the same store resumes; a dry run changes nothing; an outage changes nothing."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_spec


def _spec(name: str, uri: str, storage) -> "object":
    from genforge.config import spec_from_dict

    return spec_from_dict({**tiny_spec(name), "tracking": {"uri": uri}, "train": {
        **tiny_spec(name)["train"], "storage_path": str(storage)}})


def _record(spec, run_id: str, uri: str, storage) -> "object":
    run_dir = storage / spec.name
    run_dir.mkdir(parents=True)
    record = {"mlflow_run_id": run_id, "tracking_uri": uri, "spec": spec.training_dict(), "created": 0}
    (run_dir / "genforge_run.json").write_text(json.dumps(record))
    return run_dir


@pytest.fixture()
def sqlite_store(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    return uri, client, run_id


def test_same_store_spelled_differently_resumes_and_dry_run_moves_nothing(sqlite_store, tmp_path):
    from genforge.training.driver import plan

    uri, client, run_id = sqlite_store
    spec = _spec("spelled", uri, tmp_path / "runs")
    run_dir = _record(spec, run_id, uri, tmp_path / "runs")
    other_spelling = uri.replace("sqlite:////", "sqlite://///").replace("/mlflow.db", "//mlflow.db")
    p = plan(_spec("spelled", other_spelling, tmp_path / "runs"), echo=lambda m: None, dry_run=True)
    assert p.resume_run_id == run_id and p.orphaned is None
    assert sorted(x.name for x in (tmp_path / "runs").iterdir()) == ["spelled"] and run_dir.is_dir()


def test_a_run_the_store_does_not_have_is_moved_aside_but_never_by_a_dry_run(sqlite_store, tmp_path):
    from genforge.training.driver import plan

    uri, client, _ = sqlite_store
    spec = _spec("gone", uri, tmp_path / "runs")
    run_dir = _record(spec, "0" * 32, uri, tmp_path / "runs")
    dry = plan(spec, echo=lambda m: None, dry_run=True)
    assert dry.resume_run_id is None and dry.orphaned is not None and run_dir.is_dir()
    with pytest.warns(UserWarning, match="no longer has"):
        real = plan(spec, echo=lambda m: None)
    assert real.resume_run_id is None and not run_dir.exists()
    assert [x.name.startswith("gone.orphaned-") for x in (tmp_path / "runs").iterdir()] == [True]


def test_a_directory_of_another_store_is_refused_and_kept(sqlite_store, tmp_path):
    from genforge.errors import SpecError
    from genforge.training.driver import plan

    uri, client, run_id = sqlite_store
    spec = _spec("elsewhere", uri, tmp_path / "runs")
    run_dir = _record(spec, run_id, f"sqlite:///{tmp_path / 'other.db'}", tmp_path / "runs")
    with pytest.raises(SpecError, match="another tracking store"):
        plan(spec, echo=lambda m: None)
    assert run_dir.is_dir() and len(list((tmp_path / "runs").iterdir())) == 1


@pytest.mark.slow
def test_an_outage_while_checking_the_run_changes_nothing(tmp_path, monkeypatch):
    """A 503 (or 401, or a timeout) from the server is not "the run is gone"."""
    from mlflow import MlflowClient
    from mlflow_server import FaultProxy, MlflowServer

    from genforge.errors import RunError
    from genforge.training.driver import plan

    root = tmp_path / "server"
    root.mkdir()
    server = MlflowServer(root)
    try:
        client = MlflowClient(server.url)
        run_id = client.create_run(client.create_experiment("e")).info.run_id
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        proxy = FaultProxy(server.url, fail=lambda method, path: 503 if "runs/get" in path else None)
        try:
            spec = _spec("blip", proxy.url, tmp_path / "runs")
            run_dir = _record(spec, run_id, proxy.url, tmp_path / "runs")
            with pytest.raises(RunError, match="did not answer about run"):
                plan(spec, echo=lambda m: None)
            assert run_dir.is_dir() and len(list((tmp_path / "runs").iterdir())) == 1
        finally:
            proxy.stop()
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("newest", ["cut short", "unknown to Ray"])
def test_a_rerun_continues_from_the_newest_complete_checkpoint(train_spec, client, newest):
    """Ray restores the newest checkpoint its snapshot lists; the workers take the run directory's newest complete
    one instead where Ray's is cut short (else every retry fails on it) or where Ray's snapshot lacks the newest (a
    node lost after the checkpoint was persisted but before Ray's controller registered its report: the re-run
    got no checkpoint and retrained from scratch). The run continues from there; no step is logged twice."""
    from pathlib import Path

    from genforge.training import checkpoint

    spec = tiny_spec(f"newest-{newest.split()[0]}", epochs=2, checkpoint_every=1)
    first = train_spec(spec)
    run_dir = Path(first.checkpoint).parent
    *_, previous, last = sorted(run_dir.glob("checkpoint_step_*"))
    if newest == "cut short":
        (last / "state.pt").write_bytes((last / "state.pt").read_bytes()[:100])
        expected, epoch = previous, 1
    else:
        (run_dir / checkpoint.RAY_SNAPSHOT).unlink()  # Ray registered none of the run's checkpoints
        expected, epoch = last, 2
    said: list[str] = []
    second = train_spec(spec, ("train.epochs=3",), echo=said.append)
    assert second.run_id == first.run_id and second.status == "FINISHED" and second.epochs == 3
    resumed = [line for line in said if "resumed from" in line]
    assert resumed and str(expected) in resumed[0] and f"at epoch {epoch}," in resumed[0], said
    for key in client.get_run(first.run_id).data.metrics:
        steps = [m.step for m in client.get_metric_history(first.run_id, key)]
        assert len(steps) == len(set(steps)), key
