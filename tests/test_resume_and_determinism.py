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

# mnist5k at width 16 on one worker: 375 steps take long enough (~10 s) to interrupt mid-run reliably.
BASE = {
    "data": {"dataset": "mnist5k"},
    "model": {"family": "vae", "latent_dim": 4, "width": 16},
    "train": {"epochs": 3, "batch_size": 32, "workers": 1, "log_every_steps": 5, "seed": 3},
}
STEPS = 3 * (4000 // 32)


def _spec(name: str) -> dict:
    return {"name": name, **json.loads(json.dumps(BASE))}


def _history(client, run_id: str, key: str = "train/loss") -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def reference(train_spec):
    return train_spec(_spec("reference"))


def test_same_seed_same_losses(reference, train_spec, client):
    again = train_spec(_spec("reference-again"))
    assert reference.run_id != again.run_id
    first, second = _history(client, reference.run_id), _history(client, again.run_id)
    assert len(first) == STEPS // 5 and first == second  # bit-identical, every logged step


def test_ctrl_c_checkpoints_and_rerun_continues_exactly(
    reference, train_spec, client, tracking_uri, tmp_path, ray_session
):
    spec = _spec("interrupted")
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
        if "[genforge] epoch 1/3 step" in line:  # the first progress line: training is under way
            proc.send_signal(signal.SIGINT)
            break
        assert time.time() < deadline, "".join(lines)
    rest, _ = proc.communicate(timeout=240)
    output = "".join(lines) + rest
    assert proc.returncode == 130, output
    assert "Re-run the same command to continue" in output
    # A quiet console: progress comes through genforge's relay, not as forwarded worker output.
    assert "RayTrainWorker pid=" not in output and "Reporting training result" not in output, output

    run = client.search_runs([client.get_experiment_by_name("interrupted").experiment_id])[0]
    assert run.info.status == "KILLED"
    stopped_at = max(step for step, _ in _history(client, run.info.run_id))
    assert 5 <= stopped_at < STEPS

    resumed = train_spec(_spec("interrupted"))  # the same command again, same name
    assert resumed.run_id == run.info.run_id and resumed.resumed and resumed.status == "FINISHED"
    for key in ("train/loss", "train/kl", "val_neg_elbo", "epoch"):
        steps = [s for s, _ in _history(client, resumed.run_id, key)]
        assert len(steps) == len(set(steps)), f"{key} logged a step twice: {steps}"
    # Exact continuation: the interrupted-then-resumed run equals the uninterrupted one.
    assert _history(client, resumed.run_id) == _history(client, reference.run_id)


def test_raising_epochs_extends_a_finished_run(train_spec, client):
    first = train_spec(tiny_spec("extend"))
    assert first.epochs == 2
    same = train_spec(tiny_spec("extend"))  # nothing left to do
    assert same.run_id == first.run_id and same.epochs == 2
    longer = train_spec(tiny_spec("extend"), ("train.epochs=3",))
    assert longer.run_id == first.run_id and longer.epochs == 3 and longer.status == "FINISHED"
    steps = [s for s, _ in _history(client, first.run_id)]
    assert steps == sorted(set(steps)) and steps[-1] == 18
    assert client.get_run(first.run_id).data.tags["train.epochs"] == "3"


def test_changing_a_fixed_key_under_the_same_name_is_refused(train_spec, client):
    from genforge.errors import SpecError

    first = train_spec(tiny_spec("fixed-keys"))
    runs_before = len(client.search_runs([client.get_experiment_by_name("fixed-keys").experiment_id]))
    with pytest.raises(SpecError, match=r"model.latent_dim \(8 -> 9\).*new name"):
        train_spec(tiny_spec("fixed-keys"), ("model.latent_dim=9",))
    assert len(client.search_runs([client.get_experiment_by_name("fixed-keys").experiment_id])) == runs_before
    assert client.get_run(first.run_id).info.status == "FINISHED"
