"""Both optimisation patterns implement one `Trainer` interface, and the loop never asks which it holds
(CPU, no Ray). Also: a run created before a spec key existed can still be continued."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import FAMILIES, tiny_spec

from genforge.config import spec_from_dict
from genforge.data import load_dataset
from genforge.models import FAMILIES as REGISTRY
from genforge.models import build_models, get_family
from genforge.training.trainer import PATTERNS, Trainer, trainer_class

TRAINING = Path(__file__).resolve().parents[1] / "platform" / "genforge" / "training"


@pytest.fixture(scope="module")
def digits():
    return load_dataset(spec_from_dict(tiny_spec("iface")).data)


def _trainer(family: str, digits) -> Trainer:
    spec = spec_from_dict(tiny_spec(f"iface-{family}", family))
    torch.manual_seed(0)
    modules = build_models(spec.model, digits.image_shape, digits.num_classes)
    return trainer_class(get_family(family).pattern)(modules, spec, torch.device("cpu"), lambda module: module)


def test_every_family_pattern_has_a_trainer():
    assert {family.pattern for family in REGISTRY.values()} == set(PATTERNS)
    with pytest.raises(ValueError, match="unknown training pattern"):
        trainer_class("diffusion")


def test_the_loop_and_driver_never_branch_on_the_pattern():
    for path in TRAINING.glob("*.py"):
        assert "pattern ==" not in path.read_text(), path
    loop = (TRAINING / "worker.py").read_text()
    for word in ("likelihood", "adversarial", ".vae", "G_ema", "reconstruction_pairs"):
        assert word not in loop, f"worker.py knows about {word!r}"


@pytest.mark.parametrize("family", FAMILIES)
class TestTrainer:
    def test_implements_the_interface(self, family, digits):
        trainer = _trainer(family, digits)
        assert isinstance(trainer, Trainer)
        result = trainer.step(*digits.train.batch(torch.arange(16)))
        assert result.ok and all(torch.isfinite(v) for v in result.metrics.values())
        held_out = trainer.evaluate(digits.val, "val")
        assert held_out and all(k.startswith("val_") for k in held_out)

    def test_state_dict_round_trip(self, family, digits):
        trainer = _trainer(family, digits)
        trainer.step(*digits.train.batch(torch.arange(16)))
        other = _trainer(family, digits)
        other.load_state_dict(trainer.state_dict())
        for name, module in trainer.modules().items():
            for a, b in zip(module.state_dict().values(), other.modules()[name].state_dict().values()):
                assert torch.equal(a, b), name

    def test_figures_and_back_to_training(self, family, digits):
        trainer = _trainer(family, digits)
        figures = trainer.figures(digits, torch.device("cpu"), seed=0)
        conditional = get_family(family).conditional
        expected = {"samples", "reconstructions"} if get_family(family).pattern == "likelihood" else {"samples"}
        assert set(figures) == expected
        images, nrow = figures["samples"]
        assert images.shape == ((80 if conditional else 64), *digits.image_shape) and nrow == 8
        assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
        if "reconstructions" in figures:
            pairs, nrow = figures["reconstructions"]
            assert pairs.shape == (64, *digits.image_shape) and nrow == 16
        trainer.back_to_training()
        for name, module in trainer.modules().items():
            assert module.training == (name != "G_ema"), name

    def test_sampler_generates_in_unit_range(self, family, digits):
        trainer = _trainer(family, digits)
        z = torch.randn(5, 8)
        with torch.no_grad():
            out = trainer.sampler()(z, torch.arange(5)) if get_family(family).conditional else trainer.sampler()(z)
        assert out.shape == (5, *digits.image_shape) and 0.0 <= float(out.min()) and float(out.max()) <= 1.0

    def test_sanity_check_catches_a_shape_mismatch(self, family, digits):
        spec = spec_from_dict(tiny_spec("iface", family))
        modules = build_models(spec.model, digits.image_shape, digits.num_classes)
        cls = trainer_class(get_family(family).pattern)
        x, y = digits.train.batch(torch.arange(2))
        cls.sanity_check(modules, x, y, 8, get_family(family).conditional)
        with pytest.raises((RuntimeError, ValueError)):  # images and z of the wrong size: each pattern trips on one
            cls.sanity_check(modules, torch.rand(2, 1, 28, 28), y, 9, get_family(family).conditional)


def test_keys_added_after_a_run_started_do_not_block_resuming_it():
    from genforge.training.driver import changed_keys

    old = {"model.family": "gan", "model.ema_decay": 0.999, "train.epochs": 5}  # recorded before ema_rampup
    assert changed_keys(old, {**old, "model.ema_rampup": 0.05, "train.epochs": 9}) == []
    assert changed_keys(old, {**old, "model.ema_decay": 0.99}) == ["model.ema_decay"]


def test_a_skipped_non_finite_step_does_not_poison_the_logged_window():
    """One skipped step in a logging window: the window's means come from the finite steps only."""
    from genforge.training.worker import _Tick

    tick = _Tick(torch.device("cpu"))
    tick.add({"loss": torch.tensor(2.0)}, True)
    tick.add({"loss": torch.tensor(float("nan"))}, False)
    tick.add({"loss": torch.tensor(4.0)}, True)
    means, stop, steps_per_s = tick.reduce(False)
    assert means == {"loss": 3.0} and not stop and steps_per_s > 0
    tick.add({"loss": torch.tensor(float("inf"))}, False)
    assert tick.reduce(False)[0] == {}  # a window of only skipped steps logs no loss at all
