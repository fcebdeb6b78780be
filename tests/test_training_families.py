"""Every family trains with 2 Ray workers (DDP) and leaves a complete MLflow run behind."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch
from conftest import FAMILIES

pytestmark = pytest.mark.slow


@pytest.fixture(params=FAMILIES)
def run(request, family_runs):
    return request.param, family_runs(request.param)


class TestRunContents:
    def test_finished_with_expected_epochs(self, run):
        family, result = run
        assert result.status == "FINISHED" and result.epochs == 2

    def test_per_step_metrics_unique_steps(self, run, client):
        family, result = run
        key = "train/loss" if family in ("vae", "cvae") else "train/g_loss"
        steps = [m.step for m in client.get_metric_history(result.run_id, key)]
        assert steps == sorted(set(steps)) and len(steps) == 6  # 12 steps, a row every 2
        assert steps[-1] == 12

    def test_params_tags_and_spec(self, run, client):
        family, result = run
        r = client.get_run(result.run_id)
        assert r.data.params["model.family"] == family
        assert r.data.params["model.latent_dim"] == "8"
        assert "train.epochs" not in r.data.params and r.data.tags["train.epochs"] == "2"
        assert r.data.tags["genforge.family"] == family and r.data.tags["genforge.dataset"] == "digits"
        assert "mlflow.source.git.commit" in r.data.tags
        names = {a.path for a in client.list_artifacts(result.run_id)}
        assert {"spec.yaml", "samples", "loss_curves.png", "genforge_model"} <= names

    def test_sample_grid_per_epoch(self, run, client):
        family, result = run
        grids = [a.path for a in client.list_artifacts(result.run_id, "samples")]
        assert grids == ["samples/epoch_0001.png", "samples/epoch_0002.png"]
        if family in ("vae", "cvae"):
            assert len(client.list_artifacts(result.run_id, "reconstructions")) == 2


class TestLoggedModels:
    def test_platform_model_generates(self, run):
        from genforge.tracking.loading import load_run_model

        family, result = run
        model = load_run_model(result.tracking_uri, result.run_id)
        images = model.generate(5, seed=1)
        assert images.shape == (5, 1, 8, 8)
        assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0

    def test_mlflow_model_any_batch_size(self, run):
        family, result = run
        mlflow.set_tracking_uri(result.tracking_uri)
        info = mlflow.models.get_model_info(result.model_uri)
        assert info.metadata["latent_dim"] == 8 and info.metadata["image_shape"] == [1, 8, 8]
        loaded = mlflow.pytorch.load_model(result.model_uri)
        for n in (1, 7, 33):  # the input example had batch 2
            z = torch.randn(n, 8)
            with torch.no_grad():
                out = loaded(z, torch.arange(n) % 10) if info.metadata["conditional"] else loaded(z)
            assert out.shape == (n, 1, 8, 8)

    def test_mlflow_model_matches_platform_model(self, run):
        from genforge.tracking.loading import load_run_model

        family, result = run
        mlflow.set_tracking_uri(result.tracking_uri)
        exported = mlflow.pytorch.load_model(result.model_uri)
        native = load_run_model(result.tracking_uri, result.run_id)
        z, y = torch.randn(4, 8), torch.tensor([0, 3, 5, 9])
        with torch.no_grad():
            a = exported(z, y) if native.manifest["conditional"] else exported(z)
            b = native.sampler(z, y) if native.manifest["conditional"] else native.sampler(z)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["cgan", "cvae"])
def test_conditional_models_honour_the_label(family, family_runs):
    from genforge.tracking.loading import load_run_model

    result = family_runs(family)
    model = load_run_model(result.tracking_uri, result.run_id)
    z = torch.randn(1, 8).repeat(10, 1)
    with torch.no_grad():
        per_label = model.sampler(z, torch.arange(10))
        again = model.sampler(z, torch.arange(10))
    torch.testing.assert_close(per_label, again)
    # Same z, different labels: every pair of label outputs differs.
    dist = torch.cdist(per_label.flatten(1), per_label.flatten(1))
    assert float(dist[~torch.eye(10, dtype=torch.bool)].min()) > 1e-4
    with pytest.raises(ValueError):
        model.sampler(z[:2])


def test_cli_json_last_line_and_dry_run(ray_session, tracking_uri, tmp_path, capsys):
    """The CLI path end to end on the session's Ray: --dry-run starts nothing, --json ends with the result."""
    import json

    import yaml
    from conftest import tiny_spec

    from pipelines.cli import main

    spec = tiny_spec("cli-json", epochs=1)
    spec["tracking"] = {"uri": tracking_uri}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))

    main(["train", str(path), "--dry-run", "--json"])
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert plan["resume_run_id"] is None and plan["image_shape"] == [1, 8, 8]
    assert not (Path(tracking_uri[len("sqlite:///"):]).parent / "genforge_runs" / "cli-json").exists()

    main(["train", str(path), "--json"])
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert "[genforge] epoch 1/1 done" in captured.err  # rank 0's progress, relayed to the driver's stderr
    assert {"run_id", "experiment", "tracking_uri", "metrics", "checkpoint"} <= set(result)
    assert result["experiment"] == "cli-json" and result["tracking_uri"] == tracking_uri
    assert "test_neg_elbo" in result["metrics"] and Path(result["checkpoint"]).is_dir()
