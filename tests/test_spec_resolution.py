"""What the driver resolves once before anything runs elsewhere: paths made absolute, trial specs that always
leave a checkpoint behind."""

from __future__ import annotations

import yaml
from conftest import tiny_spec


def test_a_relative_data_root_is_made_absolute(tmp_path, monkeypatch):
    """Tune runs each trial in its own directory: a relative data.root would point nowhere there."""
    from genforge.api import as_spec

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**tiny_spec("rel"), "data": {"dataset": "imagefolder", "root": "images"}}))
    assert as_spec(path).data.root == str(tmp_path.resolve() / "images")


def test_sweep_trials_checkpoint_every_epoch():
    """An early-stopped best trial must have a checkpoint to log its model from, whatever the base spec says."""
    from genforge.config import spec_from_dict
    from genforge.tuning.sweep import _trial_spec

    base = spec_from_dict({**tiny_spec("sw", checkpoint_every=5)}).model_dump(mode="json", by_alias=True)
    ctx = {"max_epochs": 3, "workers": 1, "trial_storage": "/tmp/trials", "tracking_uri": "sqlite:////tmp/x.db",
           "experiment": "sw", "metric": "val_neg_elbo"}
    trial = _trial_spec(base, {"train.lr": 0.002}, "t1", ctx)
    assert trial.train.checkpoint_every == 1 and trial.train.epochs == 3 and trial.train.lr == 0.002
