"""Checkpoints and model artifacts: save -> load equality, tampering refused, incomplete ones skipped."""

from __future__ import annotations

import json

import pytest
import torch

from genforge import artifacts
from genforge.config import spec_from_dict
from genforge.models import build_models, get_family
from genforge.training import checkpoint


def _state():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    return {"trainer": {"net": net.state_dict(), "opt": opt.state_dict()}, "rng": [{"cpu": torch.get_rng_state()}]}


def test_roundtrip_equality(tmp_path):
    state = _state()
    checkpoint.write(tmp_path / "c", state, {"mlflow_run_id": "r1", "position": {"epoch": 1}})
    loaded, meta = checkpoint.load(tmp_path / "c")
    assert meta["mlflow_run_id"] == "r1" and len(meta["state_sha256"]) == 64
    torch.testing.assert_close(loaded, state)


def test_tampered_state_is_refused(tmp_path):
    checkpoint.write(tmp_path / "c", _state(), {"mlflow_run_id": "r1"})
    with open(tmp_path / "c" / checkpoint.STATE_FILE, "ab") as f:
        f.write(b"x")
    with pytest.raises(checkpoint.CheckpointError, match="sha256"):
        checkpoint.load(tmp_path / "c")


def test_latest_skips_incomplete_and_corrupt(tmp_path):
    for step in (10, 20, 30):
        checkpoint.write(tmp_path / checkpoint.dir_name(step), _state(), {"step": step})
    (tmp_path / checkpoint.dir_name(30) / checkpoint.META_FILE).unlink()  # crashed before meta was written
    (tmp_path / checkpoint.dir_name(20) / checkpoint.STATE_FILE).write_bytes(b"truncated")
    with pytest.warns(UserWarning):
        found = checkpoint.latest(tmp_path)
    assert found.meta["step"] == 10


def test_checkpoint_never_unpickles_objects(tmp_path):
    checkpoint.write(tmp_path / "c", _state(), {})
    # A pickle with an arbitrary class in state.pt must be rejected by weights_only loading.
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "c" / checkpoint.STATE_FILE).write_bytes(pickle.dumps(Evil()))
    meta = json.loads((tmp_path / "c" / checkpoint.META_FILE).read_text())
    meta["state_sha256"] = checkpoint.sha256_file(tmp_path / "c" / checkpoint.STATE_FILE)
    (tmp_path / "c" / checkpoint.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        checkpoint.load(tmp_path / "c")


@pytest.mark.parametrize("family", ["gan", "vae", "cgan", "cvae"])
def test_model_artifact_roundtrip(family, tmp_path):
    spec = spec_from_dict({"name": "a", "model": {"family": family, "latent_dim": 5, "width": 8}})
    torch.manual_seed(1)
    modules = build_models(spec.model, (1, 8, 8), 10)
    facts = artifacts.sampler_facts(spec, (1, 8, 8), 10)
    artifacts.save(tmp_path / "m", spec, modules, facts)
    loaded = artifacts.load(tmp_path / "m")
    for name, module in modules.items():
        torch.testing.assert_close(loaded.modules[name].state_dict(), module.state_dict())
    assert loaded.latent_dim == 5 and loaded.spec == spec
    rng = torch.get_rng_state()
    images = loaded.generate(3, seed=0)
    assert torch.equal(torch.get_rng_state(), rng)  # a private generator: the global RNG never moves
    # The loaded model draws what the saved weights draw from the same seeded z (labels: the classes in turn).
    for m in modules.values():
        m.eval()
    z = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sampler = get_family(family).sampler(modules)
        expected = sampler(z, torch.arange(3)) if loaded.manifest["conditional"] else sampler(z)
    assert images.shape == (3, 1, 8, 8) and images.device.type == "cpu" and images.dtype == torch.float32
    torch.testing.assert_close(images, expected.clamp(0, 1))
    assert 0 <= images.min() and images.max() <= 1 and not torch.equal(loaded.generate(3, seed=1), images)


@pytest.mark.parametrize("family", ["gan", "cvae"])
def test_draw_is_batch_independent_and_honours_labels(family):
    """genforge.sampling.draw, the one generation loop: the same seed gives the same images in any batching, and
    a conditional sampler gets the labels it is given."""
    from genforge.sampling import draw

    spec = spec_from_dict({"name": "a", "model": {"family": family, "latent_dim": 5, "width": 8}})
    torch.manual_seed(2)
    modules = build_models(spec.model, (1, 8, 8), 10)
    for m in modules.values():
        m.eval()
    sampler = get_family(family).sampler(modules)
    labels = torch.arange(7) % 10 if family == "cvae" else None
    whole = draw(sampler, 5, 7, seed=4, labels=labels)
    torch.testing.assert_close(draw(sampler, 5, 7, seed=4, labels=labels, batch_size=3), whole)
    if labels is not None:
        assert not torch.equal(draw(sampler, 5, 7, seed=4, labels=torch.zeros(7, dtype=torch.long)), whole)
        with pytest.raises(ValueError, match="6 labels for 7 samples"):
            draw(sampler, 5, 7, labels=labels[:6])


def test_tampered_model_weights_are_refused(tmp_path):
    spec = spec_from_dict({"name": "a", "model": {"latent_dim": 5, "width": 8}})
    modules = build_models(spec.model, (1, 8, 8), 10)
    artifacts.save(tmp_path / "m", spec, modules, artifacts.sampler_facts(spec, (1, 8, 8), 10))
    with open(tmp_path / "m" / artifacts.WEIGHTS, "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x00\x00\x01")
    with pytest.raises(artifacts.ArtifactError, match="sha256"):
        artifacts.load(tmp_path / "m")
