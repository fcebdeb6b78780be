"""Same seed, same workers: identical losses. Ctrl-C checkpoints; re-running continues the same run
exactly where it stopped (the resumed run's losses equal an uninterrupted run's), never logging a
step twice; raising train.epochs extends a finished run; other changes under the same name are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import tiny_spec

pytestmark = pytest.mark.slow

# mnist5k at width 16 on one worker: 180 steps take long enough (~5 s) to interrupt mid-run reliably.
BASE = {
    "data": {"dataset": "mnist5k"},
    "model": {"family": "vae", "latent_dim": 4, "width": 16},
    "train": {"epochs": 3, "batch_size": 32, "workers": 1, "log_every_steps": 5, "seed": 3, "max_steps_per_epoch": 60},
}
STEPS = 3 * 60


def _spec(name: str) -> dict:
    return {"name": name, **json.loads(json.dumps(BASE))}


def _history(client, run_id: str, key: str = "train/loss") -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def reference(train_spec):
    return train_spec(_spec("reference"))


def _start_training(name: str, tracking_uri: str, tmp_path, ray_session, stop_when: str):
    """`genforge train` in a subprocess on the session's Ray; returns it once `stop_when` is printed."""
    spec = _spec(name)
    spec["tracking"] = {"uri": tracking_uri}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "train", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
    )
    lines = []
    deadline = time.time() + 240
    for line in proc.stdout:
        lines.append(line)
        if stop_when in line:
            return proc, lines
        assert time.time() < deadline, "".join(lines)
    raise AssertionError("".join(lines))


def _assert_continued_exactly(client, resumed, reference) -> None:
    for key in ("train/loss", "train/kl", "val_neg_elbo", "epoch"):
        steps = [s for s, _ in _history(client, resumed.run_id, key)]
        assert len(steps) == len(set(steps)), f"{key} logged a step twice: {steps}"
    # Exact continuation: the interrupted-then-resumed run equals the uninterrupted one.
    assert _history(client, resumed.run_id) == _history(client, reference.run_id)


@pytest.mark.parametrize("signum,exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_a_stop_signal_checkpoints_and_rerun_continues_exactly(
    signum, exit_code, reference, train_spec, client, tracking_uri, tmp_path, ray_session
):
    name = f"stopped-{signal.Signals(signum).name.lower()}"
    # The first progress line: training is under way.
    proc, lines = _start_training(name, tracking_uri, tmp_path, ray_session, "[genforge] epoch 1/3 step")
    stopped = time.monotonic()
    proc.send_signal(signum)
    rest, _ = proc.communicate(timeout=240)
    output = "".join(lines) + rest
    assert proc.returncode == exit_code, output
    assert time.monotonic() - stopped < 25  # within train.preempt_grace_s's default
    assert "Re-run the same command to continue" in output
    # A quiet console: progress comes through genforge's relay, not as forwarded worker output.
    assert "RayTrainWorker pid=" not in output and "Reporting training result" not in output, output

    run = client.search_runs([client.get_experiment_by_name(name).experiment_id])[0]
    assert run.info.status == "KILLED"
    before_stop = _history(client, run.info.run_id)
    stopped_at = max(step for step, _ in before_stop)
    assert 5 <= stopped_at < STEPS
    # Same seed, same workers: a second fresh start logs bit-identical losses at every step it reached.
    reference_losses = _history(client, reference.run_id)
    assert len(reference_losses) == STEPS // 5 and before_stop == reference_losses[: len(before_stop)]

    if signum == signal.SIGTERM:
        return  # the run and its checkpoint are as ctrl-c leaves them, and ctrl-c's case goes on to the resume
    resumed = train_spec(_spec(name))  # the same command again, same name
    assert resumed.run_id == run.info.run_id and resumed.resumed and resumed.status == "FINISHED"
    _assert_continued_exactly(client, resumed, reference)


def test_a_killed_driver_resumes_from_the_latest_checkpoint(
    reference, train_spec, client, tracking_uri, tmp_path, ray_session
):
    name = "driver-killed"
    # Epoch 2 under way: epoch 1's checkpoint exists.
    proc, _ = _start_training(name, tracking_uri, tmp_path, ray_session, "[genforge] epoch 2/3 step")
    proc.kill()  # SIGKILL: no handler runs, the MLflow run stays RUNNING
    proc.communicate(timeout=60)
    run = client.search_runs([client.get_experiment_by_name(name).experiment_id])[0]
    assert run.info.status == "RUNNING"

    resumed = train_spec(_spec(name))
    assert resumed.run_id == run.info.run_id and resumed.resumed and resumed.status == "FINISHED"
    _assert_continued_exactly(client, resumed, reference)


def test_the_time_limit_stops_cleanly_rerun_continues_and_more_epochs_extend_the_run(train_spec, client):
    # The limit runs out while the workers start: the first tick checkpoints and stops.
    limited = train_spec(tiny_spec("time-limited"), ("train.time_limit_s=1",))
    assert limited.status == "KILLED" and limited.checkpoint is not None and limited.epochs < 2
    run = client.get_run(limited.run_id)
    assert run.info.status == "KILLED" and run.data.tags["genforge.stop_reason"] == "time_limit"
    assert "genforge.model_uri" not in run.data.tags  # an unfinished model is never logged
    resumed = train_spec(tiny_spec("time-limited"))
    assert resumed.run_id == limited.run_id and resumed.status == "FINISHED" and resumed.epochs == 2
    steps = [s for s, _ in _history(client, resumed.run_id)]
    assert steps == list(range(2, 13, 2))  # continued: every step once

    same = train_spec(tiny_spec("time-limited"))  # finished: nothing left to do
    assert same.run_id == limited.run_id and same.epochs == 2
    longer = train_spec(tiny_spec("time-limited"), ("train.epochs=3",))  # raising train.epochs extends the run
    assert longer.run_id == limited.run_id and longer.epochs == 3 and longer.status == "FINISHED"
    steps = [s for s, _ in _history(client, limited.run_id)]
    assert steps == list(range(2, 19, 2))  # every step once, epoch 3 after epoch 2
    assert client.get_run(limited.run_id).data.tags["train.epochs"] == "3"


def test_changing_a_fixed_key_under_the_same_name_is_refused(reference, train_spec, client):
    from genforge.errors import SpecError

    experiment = client.get_experiment_by_name("reference").experiment_id
    runs_before = len(client.search_runs([experiment]))
    with pytest.raises(SpecError, match=r"model.latent_dim \(4 -> 5\).*new name"):
        train_spec(_spec("reference"), ("model.latent_dim=5",))
    assert len(client.search_runs([experiment])) == runs_before
    assert client.get_run(reference.run_id).info.status == "FINISHED"
