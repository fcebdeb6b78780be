"""A tiny sweep on digits through the whole pipeline: parent and child runs, the chosen best trial, the retrain of
its configuration (tune.retrain_epochs), registration, promotion, generation from @champion in a fresh process, and
safe re-runs. One sweep serves every test here (each costs a Ray Tune run and an evaluation)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_spec

pytestmark = pytest.mark.slow

EVAL = {"samples": 300, "seeds": 2, "kid_subsets": 10, "kid_subset_size": 100, "iw_samples": 4, "extractor_epochs": 4}


def _pipeline_spec(name: str, tracking_uri: str, **tune) -> dict:
    spec = tiny_spec(name, "vae", max_steps_per_epoch=25)  # enough steps that the winner beats the initial weights
    spec["stages"] = ["tune", "evaluate", "register", "promote"]
    spec["tune"] = {"num_samples": 3, "max_epochs": 2, "space": {
        "train.lr": {"loguniform": [1e-3, 5e-3]}, "model.latent_dim": {"choice": [4, 8]}}, **tune}
    spec["evaluate"] = EVAL
    spec["register"] = {"model_name": "digits-vae-test"}
    spec["tracking"] = {"uri": tracking_uri}
    return spec


RETRAIN_EPOCHS = 3  # longer than any trial (tune.max_epochs 2), so the retrained run is told apart by its epochs


@pytest.fixture(scope="module")
def pipeline(ray_session, tracking_uri):
    """3 trials of at most 2 epochs, then the winner's configuration retrained for 3 epochs; (spec, result, lines)."""
    import pipelines
    from genforge.config import spec_from_dict

    spec = spec_from_dict(_pipeline_spec("sweepy", tracking_uri, retrain_epochs=RETRAIN_EPOCHS))
    lines: list[str] = []
    return spec, pipelines.run(spec, echo=lines.append), lines


def _trials(client, parent):
    """The sweep's trial runs (its children less the retrained run)."""
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    return [c for c in children if "genforge.retrain_of" not in c.data.tags], children


def test_parent_and_child_runs(pipeline, client):
    spec, result, _ = pipeline
    parent = client.get_run(result.sweep_parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["genforge.kind"] == "sweep"
    trials, children = _trials(client, parent)
    assert len(trials) == 3 and len(children) == 4  # the trials and the retrained run
    assert all(c.info.status in ("FINISHED", "FAILED") for c in children)  # never left RUNNING
    early = [c for c in children if "genforge.stopped_early" in c.data.tags]
    assert all(c.info.status == "FINISHED" for c in early)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert {"sweep/leaderboard.csv", "sweep/leaderboard.json", "sweep/best_config.json",
            "sweep/objective_vs_hyperparameters.png"} <= artifacts


def test_best_trial_is_the_minimum_of_the_objective(pipeline, client):
    spec, result, _ = pipeline
    parent = client.get_run(result.sweep_parent_run_id)
    children, _ = _trials(client, parent)
    best = client.get_run(parent.data.tags["genforge.best_trial_run_id"])
    assert best.data.tags["mlflow.parentRunId"] == result.sweep_parent_run_id
    finished = [c for c in children if c.info.status == "FINISHED" and "val_neg_elbo" in c.data.metrics
                and "genforge.stopped_early" not in c.data.tags]
    # The best of the trials that ran the whole budget (ASHA-stopped ones stopped for being worse).
    assert best.data.metrics["val_neg_elbo"] <= min(c.data.metrics["val_neg_elbo"] for c in finished) + 1e-9
    assert set(result.best_config) == {"train.lr", "model.latent_dim"}


def test_registered_and_promoted(pipeline, client):
    spec, result, _ = pipeline
    assert result.registered["name"] == "digits-vae-test" and result.registered["run_id"] == result.run_id
    v = client.get_model_version("digits-vae-test", str(result.registered["version"]))
    assert v.tags["protocol_hash"] == client.get_run(result.run_id).data.tags["genforge.eval.protocol_hash"]
    assert float(v.tags["fid"]) == pytest.approx(client.get_run(result.run_id).data.metrics["fid"])
    for key in ("fid_floor", "kid_floor", "fid_ratio", "recognisable"):  # the floor and quality metrics flow too
        assert float(v.tags[key]) == pytest.approx(result.metrics[key]), key
    assert result.promotion["promoted"] and result.champion_uri == "models:/digits-vae-test@champion"


def test_generate_from_champion_in_a_fresh_process(pipeline, tracking_uri, tmp_path):
    out = tmp_path / "grid.png"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "generate", "models:/digits-vae-test@champion", "-n", "9",
         "--out", str(out), "--tracking-uri", tracking_uri],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    from PIL import Image

    with Image.open(out) as img:
        assert img.size == (3 * 8 + 4 * 2, 3 * 8 + 4 * 2)  # 3x3 grid of 8x8 digits, 2 px padding


def test_rerun_is_safe_and_never_demotes(pipeline, client, tracking_uri):
    import pipelines
    from genforge.config import spec_from_dict

    spec, first, _ = pipeline
    lines: list[str] = []
    again = pipelines.run(spec, echo=lines.append)
    assert again.run_id == first.run_id and "evaluate" in again.skipped
    assert again.registered["version"] == first.registered["version"]
    assert again.champion_uri == first.champion_uri
    assert any(f"already trained {RETRAIN_EPOCHS} epochs; nothing to do" in line for line in lines), lines
    run = client.get_run(first.run_id)
    retrains = client.search_runs([run.info.experiment_id],
                                  f"tags.`genforge.retrain_of` = '{run.data.tags['genforge.retrain_of']}'")
    assert [r.info.run_id for r in retrains] == [first.run_id]  # the retrained run reused, no second retrain
    # A candidate known to be worse under the same model name: one step at a learning rate that leaves the
    # initial weights in place. It is registered, refused, and the champion stays.
    worse = _pipeline_spec("sweepy-untrained", tracking_uri)
    worse["train"].update(max_steps_per_epoch=1)
    worse["tune"] = {"num_samples": 1, "max_epochs": 1, "scheduler": "none", "space": {"train.lr": {"choice": [1e-9]}}}
    other = pipelines.run(spec_from_dict(worse), echo=lambda m: None)
    decision = other.promotion
    assert other.registered["version"] != first.registered["version"]
    assert not decision["promoted"] and decision["previous"] == first.registered["version"]
    assert decision["candidate_value"] > decision["previous_value"] + decision["noise"], decision
    champion = client.get_model_version_by_alias("digits-vae-test", "champion")
    assert int(champion.version) == first.registered["version"] and other.champion_uri is None


def test_bad_search_space_is_a_one_line_error(tracking_uri):
    from genforge.config import spec_from_dict
    from genforge.errors import SpecError
    from genforge.tuning.sweep import tune_sweep

    spec = _pipeline_spec("bad-space", tracking_uri)
    spec["tune"]["space"] = {"model.latent_dim": {"choice": [0, 8]}}
    with pytest.raises(SpecError, match=r"tune.space.model.latent_dim: value 0"):
        tune_sweep(spec_from_dict(spec), echo=lambda m: None)
    with pytest.raises(SpecError, match="cannot be searched"):
        spec_from_dict({**spec, "tune": {"space": {"train.epochs": {"choice": [1, 2]}}}})


def test_a_crashing_and_a_diverging_trial_fail_and_the_sweep_picks_the_best(
    ray_session, tracking_uri, client, monkeypatch
):
    from genforge.config import spec_from_dict
    from genforge.tuning.sweep import tune_sweep

    spec = tiny_spec("crash-diverge", "vae", max_nonfinite_steps=0)
    spec["tracking"] = {"uri": tracking_uri}
    # A grid: every value once. 1e6 diverges; the trial at 4e-3 crashes at its first step (an injected fault).
    spec["tune"] = {"num_samples": 1, "max_epochs": 1, "search": "random", "scheduler": "none",
                    "space": {"train.lr": {"grid": [2e-3, 4e-3, 1e6]}}}
    monkeypatch.setenv("GENFORGE_FAULTS", "raise@lr=0.004")
    result = tune_sweep(spec_from_dict(spec), echo=lambda m: None)
    by_lr = {row["config"]["train.lr"]: row for row in result.leaderboard}
    assert by_lr[1e6]["status"] == "FAILED" and "non-finite" in by_lr[1e6]["reason"]
    assert by_lr[4e-3]["status"] == "FAILED" and "injected fault" in by_lr[4e-3]["reason"], by_lr[4e-3]
    for lr in (1e6, 4e-3):
        assert client.get_run(by_lr[lr]["run_id"]).info.status == "FAILED"
    assert by_lr[2e-3]["status"] == "FINISHED" and result.best_run_id == by_lr[2e-3]["run_id"]
    assert client.get_run(result.best_run_id).data.tags.get("genforge.model_uri")  # the winner's model is logged


def test_retrain_epochs_must_be_positive():
    from genforge.config import spec_from_dict
    from genforge.errors import SpecError

    assert spec_from_dict(tiny_spec("r")).tune.retrain_epochs is None  # off by default
    with pytest.raises(SpecError, match="retrain_epochs"):
        spec_from_dict({**tiny_spec("r"), "tune": {"retrain_epochs": 0}})


def test_retrain_trains_the_winner_to_its_budget_and_registers_it(pipeline, client):
    spec, result, lines = pipeline
    parent = client.get_run(result.sweep_parent_run_id)
    trials, _ = _trials(client, parent)
    run = client.get_run(result.run_id)
    best_trial = parent.data.tags["genforge.best_trial_run_id"]
    assert best_trial in {t.info.run_id for t in trials} and result.run_id not in {t.info.run_id for t in trials}
    # The retrained run: the winner's configuration, its own run nested under the sweep, trained for 3 epochs.
    assert run.data.tags["genforge.retrain_of"] == best_trial
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.data.tags["genforge.retrained_run_id"] == parent.data.tags["genforge.best_run_id"] == result.run_id
    trial_params = client.get_run(best_trial).data.params
    for key in ("train.lr", "model.latent_dim"):
        assert run.data.params[key] == trial_params[key] and float(run.data.params[key]) == result.best_config[key]
    assert run.info.status == "FINISHED" and run.data.tags["genforge.finalized_epochs"] == str(RETRAIN_EPOCHS)
    assert max(m.value for m in client.get_metric_history(result.run_id, "epoch")) == RETRAIN_EPOCHS
    # The leaderboard still ranks the trials (at most 2 epochs each), not the retrained run.
    rows = json.loads(Path(client.download_artifacts(parent.info.run_id, "sweep/leaderboard.json")).read_text())
    assert len(rows) == 3 and max(r["epochs"] for r in rows) <= 2 and best_trial in {r["run_id"] for r in rows}
    # What was evaluated, registered and promoted is the retrained run.
    assert "fid" in result.metrics and result.registered["run_id"] == result.run_id
    assert any(line.startswith("[genforge] retrain: best trial ") and f"for {RETRAIN_EPOCHS} epochs" in line
               for line in lines)
