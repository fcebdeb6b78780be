"""A registered version points at immutable weights and at the evaluation of exactly those weights; every
number on a version comes from one protocol."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_spec

pytestmark = pytest.mark.slow

SMALL = ["evaluate.samples=300", "evaluate.seeds=2", "evaluate.kid_subsets=10", "evaluate.kid_subset_size=100",
         "evaluate.iw_samples=4", "evaluate.extractor_epochs=4"]


def test_extending_a_run_re_evaluates_and_registers_its_new_weights(train_spec, client, tracking_uri):
    import genforge
    from genforge.tracking.evaluation_logging import current_evaluation
    from genforge.training import checkpoint

    spec = tiny_spec("extend-me", epochs=1)
    first = train_spec(spec)
    v1 = genforge.register(first.run_id, name="extend-m", overrides=SMALL, tracking_uri=tracking_uri,
                           echo=lambda m: None)
    second = train_spec(spec, ("train.epochs=2",))
    assert second.run_id == first.run_id and second.epochs == 2
    assert current_evaluation(client.get_run(first.run_id)) is None  # the old evaluation describes old weights
    v2 = genforge.register(first.run_id, name="extend-m", overrides=SMALL, tracking_uri=tracking_uri,
                           echo=lambda m: None)
    assert v2.version != v1.version and v2.model_artifact != v1.model_artifact
    again = genforge.register(first.run_id, name="extend-m", tracking_uri=tracking_uri, echo=lambda m: None)
    assert again.version == v2.version
    # Version 1 still serves the epoch-1 weights, exactly those its numbers describe.
    old = genforge.load_model(f"models:/extend-m/{v1.version}", tracking_uri=tracking_uri)
    new = genforge.load_model(f"models:/extend-m/{v2.version}", tracking_uri=tracking_uri)
    state, _ = checkpoint.load(first.checkpoint)
    for key, tensor in state["trainer"]["vae"].items():
        assert torch.equal(old.modules["vae"].state_dict()[key], tensor), key
    assert any(not torch.equal(a, b) for a, b in zip(old.modules["vae"].state_dict().values(),
                                                     new.modules["vae"].state_dict().values()))


def test_a_second_protocol_takes_over_metrics_tags_and_versions_together(train_spec, client, tracking_uri):
    import genforge

    run = train_spec(tiny_spec("two-protocols", epochs=1))
    a = genforge.evaluate(run.run_id, overrides=SMALL, tracking_uri=tracking_uri, echo=lambda m: None)
    b = genforge.evaluate(run.run_id, overrides=[*SMALL, "evaluate.samples=250"], tracking_uri=tracking_uri,
                          echo=lambda m: None)
    assert a.protocol["hash"] != b.protocol["hash"]
    data = client.get_run(run.run_id).data
    assert data.tags["genforge.eval.protocol_hash"] == b.protocol["hash"]
    for key in ("fid", "kid", "precision", "recall"):
        assert data.metrics[key] == pytest.approx(b.metrics[key]), key  # the run's numbers are B's, not A's
    version = client.get_model_version(
        "digits-vae", str(genforge.register(run.run_id, tracking_uri=tracking_uri, echo=lambda m: None).version))
    assert version.tags["protocol_hash"] == b.protocol["hash"]
    for key in ("fid", "kid", "precision", "recall", "density", "coverage"):
        assert float(version.tags[key]) == pytest.approx(b.metrics[key]), key


def test_a_run_records_its_code_dependencies_and_dataset(family_runs, client):
    """Lineage: genforge's version, the commit of the code, the sha256 of constraints.txt, and the dataset as an
    MLflow dataset input whose digest is the data's content fingerprint."""
    import hashlib
    import subprocess
    from pathlib import Path

    import genforge
    from genforge.config import spec_from_dict
    from genforge.training.driver import preflight

    run = client.get_run(family_runs("vae").run_id)
    tags = run.data.tags
    root = Path(__file__).resolve().parents[1]
    assert tags["genforge.version"] == genforge.__version__
    assert tags["genforge.constraints_sha256"] == hashlib.sha256((root / "constraints.txt").read_bytes()).hexdigest()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    assert tags["mlflow.source.git.commit"].split("+")[0] == (head or "unknown")
    (dataset_input,) = run.inputs.dataset_inputs
    data, _, _ = preflight(spec_from_dict(tiny_spec("x")))
    assert dataset_input.dataset.name == "digits" and dataset_input.dataset.digest == data.fingerprint()
