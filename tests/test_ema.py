"""The EMA generator's ramp-up (Karras et al. 2020, stylegan2-ada; 2022, EDM), on CPU without Ray.

The defect it fixes: G_ema started as a copy of the untrained G and decayed at 0.999 from step 1, so
after a few hundred steps it was still mostly the initial weights, and everything that samples from
G_ema (grids, in-loop FID, the exported model, evaluation, the sweep objective) saw noise.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from conftest import tiny_spec

from genforge.config import spec_from_dict
from genforge.data import load_dataset
from genforge.models import build_models
from genforge.training.adversarial_trainer import AdversarialTrainer
from genforge.training.steps import ema_decay_at

HALF_LIFE_0999 = math.log(0.5) / math.log(0.999)  # 692.8 steps


@pytest.fixture(scope="module")
def digits():
    return load_dataset(spec_from_dict(tiny_spec("ema", "gan")).data)


def _trainer(digits, *overrides: str) -> AdversarialTrainer:
    spec = spec_from_dict(tiny_spec("ema", "gan"), overrides)
    torch.manual_seed(0)
    modules = build_models(spec.model, digits.image_shape, digits.num_classes)
    return AdversarialTrainer(modules, spec, torch.device("cpu"), wrap=lambda module: module)


def _steps(trainer: AdversarialTrainer, digits, first: int, count: int) -> None:
    for i in range(first, first + count):
        start = (i * 32) % (len(digits.train) - 32)
        trainer.step(*digits.train.batch(torch.arange(start, start + 32)))


@torch.no_grad()
def _distance(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return math.sqrt(sum(float(((p - q) ** 2).sum()) for p, q in zip(a.parameters(), b.parameters())))


class TestSchedule:
    @pytest.mark.parametrize("step", [1, 2, 10, 100, 1000, 13_000, 13_856, 13_857, 20_000, 10**6])
    def test_closed_form(self, step):
        expected = 0.5 ** (1.0 / min(HALF_LIFE_0999, 0.05 * step))
        assert ema_decay_at(step, 0.999, 0.05) == pytest.approx(expected, rel=1e-12, abs=1e-15)

    def test_first_step_copies_and_full_length_is_the_configured_decay(self):
        assert ema_decay_at(1, 0.999, 0.05) == pytest.approx(0.5**20)  # ~1e-6: G_ema := G, almost exactly
        assert ema_decay_at(50_000, 0.999, 0.05) == 0.999
        decays = [ema_decay_at(t, 0.999, 0.05) for t in range(1, 20_000, 7)]
        assert decays == sorted(decays)  # the half-life only grows

    @pytest.mark.parametrize("step", [1, 2, 100, 10**5])
    def test_rampup_zero_is_the_old_constant_decay(self, step):
        assert ema_decay_at(step, 0.999, 0.0) == 0.999
        assert ema_decay_at(step, 0.0, 0.05) == 0.0  # decay 0: G_ema is G


class TestTrainer:
    def test_g_ema_follows_g_early(self, digits):
        """After 100 steps G_ema is near G, not near the initial weights (fails without the ramp-up)."""
        trainer = _trainer(digits)
        initial = copy.deepcopy(trainer.G)
        _steps(trainer, digits, 0, 100)
        assert _distance(trainer.G_ema, trainer.G) < 0.25 * _distance(initial, trainer.G)
        assert trainer.ema_step == 100

    def test_first_step_copies_g(self, digits):
        trainer = _trainer(digits)
        initial = copy.deepcopy(trainer.G)
        _steps(trainer, digits, 0, 1)
        assert _distance(trainer.G_ema, trainer.G) < 1e-4 * _distance(initial, trainer.G)

    def test_rampup_zero_keeps_the_constant_decay(self, digits):
        trainer = _trainer(digits, "model.ema_rampup=0")
        initial = copy.deepcopy(trainer.G)
        _steps(trainer, digits, 0, 1)
        with torch.no_grad():
            for p0, p, p_ema in zip(initial.parameters(), trainer.G.parameters(), trainer.G_ema.parameters()):
                torch.testing.assert_close(p_ema, p0 + 0.001 * (p - p0))
        _steps(trainer, digits, 1, 99)  # and 100 steps leave it mostly at the initial weights, as before
        assert _distance(trainer.G_ema, trainer.G) > 0.8 * _distance(initial, trainer.G)

    def test_resume_is_bit_identical(self, digits):
        """The ramp-up's clock is in the state dict: stopping and continuing equals running through."""
        straight = _trainer(digits)
        _steps(straight, digits, 0, 40)

        first = _trainer(digits)
        _steps(first, digits, 0, 20)
        buffer = io.BytesIO()
        torch.save({"trainer": first.state_dict(), "rng": torch.get_rng_state()}, buffer)
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)  # as checkpoints are loaded
        resumed = _trainer(digits)
        resumed.load_state_dict(saved["trainer"])
        torch.set_rng_state(saved["rng"])
        assert resumed.ema_step == 20
        _steps(resumed, digits, 20, 20)
        for a, b in zip(straight.G_ema.state_dict().values(), resumed.G_ema.state_dict().values()):
            assert torch.equal(a, b)

    def test_old_checkpoint_without_the_counter_falls_back_to_adam_steps(self, digits):
        first = _trainer(digits)
        _steps(first, digits, 0, 12)
        state = first.state_dict()
        del state["ema_step"]  # written before the ramp-up existed
        resumed = _trainer(digits)
        resumed.load_state_dict(state)
        assert resumed.ema_step == 12
