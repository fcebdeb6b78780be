"""Training-health signals in real runs: every family logs its flags, and a VAE whose KL weight forces the
posterior onto the prior is flagged as collapsed, with the warning on the console."""

from __future__ import annotations

import pytest
from conftest import FAMILIES, tiny_spec

from genforge.families import get_family_info

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("family", FAMILIES)
def test_every_run_logs_its_health_flags(family, family_runs, client):
    run = client.get_run(family_runs(family).run_id)
    metrics = run.data.metrics
    assert 0.0 <= metrics["sample_diversity"] and "health/mode_collapse" in metrics
    if get_family_info(family).pattern == "likelihood":
        assert 0 <= metrics["val_active_units"] <= 8 and "health/posterior_collapse" in metrics
    else:
        assert 0.0 <= metrics["train/d_real_acc"] <= 1.0 and "health/d_overpowering" in metrics


def test_a_collapsed_posterior_is_flagged_and_warned(ray_session, tracking_uri, client):
    from genforge.config import spec_from_dict
    from genforge.training.driver import train

    lines: list[str] = []
    spec = {**tiny_spec("posterior-collapse", "vae", epochs=2), "tracking": {"uri": tracking_uri}}
    spec["model"]["beta"] = 500.0  # the KL term dominates: q(z|x) = p(z), no latent unit carries information
    result = train(spec_from_dict(spec), echo=lines.append)
    metrics = client.get_run(result.run_id).data.metrics
    assert metrics["health/posterior_collapse"] == 1.0 and metrics["val_active_units"] == 0
    assert any("WARNING: posterior collapse" in line for line in lines), lines
