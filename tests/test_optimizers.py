"""The optimiser keys (`train.optimizer`, betas, momentum, weight decay, grad_clip, lr_schedule, warmup_steps): each
optimizer is built with the spec's hyperparameters, the defaults are exactly the Adam genforge always used, the
cosine/warm-up curve is its closed form, clipping bounds the update, schedules survive a checkpoint and a rollback
exactly. (A real two-worker run with SGD and a warmed-up cosine that survives lost workers with its schedule and
momentum is tests/test_faults.py's lost-worker case.)"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import FAMILIES, tiny_spec
from torch import nn

from genforge.config import spec_from_dict
from genforge.data import load_dataset
from genforge.errors import SpecError
from genforge.models import build_models, get_family
from genforge.training import optimizers
from genforge.training.steps import apply_step
from genforge.training.trainer import trainer_class

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
CLASSES = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
           "rmsprop": torch.optim.RMSprop}


def _train(**keys):
    return spec_from_dict(tiny_spec("optim", **keys)).train


def _group(opt: torch.optim.Optimizer) -> dict:
    return {k: v for k, v in opt.param_groups[0].items() if k not in ("params", "initial_lr")}


@pytest.fixture(scope="module")
def digits():
    return load_dataset(spec_from_dict(tiny_spec("optim")).data)


def _trainer(family: str, digits, **train):
    spec = spec_from_dict(tiny_spec(f"optim-{family}", family, **train))
    torch.manual_seed(0)
    modules = build_models(spec.model, digits.image_shape, digits.num_classes)
    return trainer_class(get_family(family).pattern)(modules, spec, torch.device("cpu"), lambda module: module)


class TestBuilder:
    @pytest.mark.parametrize("role", ["G", "D", "vae"])
    @pytest.mark.parametrize("name", OPTIMIZERS)
    def test_hyperparameters_reach_the_optimizer(self, name, role):
        momentum = 0.0 if name in ("adam", "adamw") else 0.8
        train = _train(optimizer=name, lr=2e-3, lr_d=3e-3, beta1=0.3, beta2=0.95, momentum=momentum,
                       weight_decay=1e-4, nesterov=name == "sgd")
        opt = optimizers.build_optimizer(nn.Linear(3, 2).parameters(), train, role)
        assert type(opt) is CLASSES[name]
        group = opt.param_groups[0]
        assert group["lr"] == (3e-3 if role == "D" else 2e-3) and group["weight_decay"] == 1e-4
        if name in ("adam", "adamw"):
            assert group["betas"] == (0.3, 0.95)
        else:
            assert group["momentum"] == 0.8
        if name == "sgd":
            assert group["nesterov"] is True
        if name == "rmsprop":
            assert group["alpha"] == 0.95  # beta2 is RMSprop's smoothing constant

    def test_d_falls_back_to_g_and_overrides_apart(self):
        train = _train(optimizer="sgd", momentum=0.9, optimizer_d="adam", beta1=0.0, beta1_d=0.7)
        g = optimizers.optimizer_spec(train, "G")
        d = optimizers.optimizer_spec(train, "D")
        assert (g.name, g.betas[0], d.name, d.betas[0]) == ("sgd", 0.0, "adam", 0.7)
        same = optimizers.optimizer_spec(_train(optimizer="rmsprop", beta1=0.2), "D")
        assert same.name == "rmsprop" and same.betas[0] == 0.2 and same.lr == 1e-3

    @pytest.mark.parametrize("family", FAMILIES)
    def test_defaults_are_the_adam_genforge_always_used(self, family, digits):
        trainer = _trainer(family, digits, lr=2e-4, lr_d=4e-4)
        params = [nn.Parameter(torch.zeros(1))]
        if get_family(family).pattern == "adversarial":  # DCGAN's betas for both networks
            assert _group(trainer.opt_G) == _group(torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999)))
            assert _group(trainer.opt_D) == _group(torch.optim.Adam(params, lr=4e-4, betas=(0.5, 0.999)))
            assert type(trainer.opt_G) is type(trainer.opt_D) is torch.optim.Adam
        else:  # Adam's own defaults
            assert _group(trainer.opt) == _group(torch.optim.Adam(params, lr=2e-4))
            assert type(trainer.opt) is torch.optim.Adam

    @pytest.mark.parametrize("keys", [{"optimizer": "adam", "nesterov": True},
                                      {"optimizer": "sgd", "nesterov": True}])
    def test_nesterov_without_sgd_momentum_is_a_one_line_spec_error(self, keys):
        with pytest.raises(SpecError) as err:
            spec_from_dict(tiny_spec("optim-bad", **keys))
        assert "\n" not in str(err.value) and "train.nesterov" in str(err.value)
        assert "sgd and momentum > 0" in str(err.value)


def _closed_form(n: int, base: float, warmup: int, total: int) -> float:
    """The learning rate of step n (1-based): linear warm-up over `warmup` steps, then the cosine to 0 at `total`."""
    if n <= warmup:
        return base * n / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (n - 1 - warmup) / (total - warmup)))


class TestSchedule:
    @pytest.mark.parametrize("warmup,total", [(0, 12), (4, 12), (3, 3)])
    def test_cosine_with_warmup_is_the_closed_form(self, warmup, total):
        train = _train(optimizer="sgd", lr=0.1, lr_schedule="cosine", warmup_steps=warmup)
        opt = optimizers.build_optimizer(nn.Linear(2, 1).parameters(), train, "vae")
        sched = optimizers.build_scheduler(opt, train, lambda: total)
        seen = []
        for _ in range(total):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            optimizers.advance(sched)
        assert seen == pytest.approx([_closed_form(n, 0.1, warmup, total) for n in range(1, total + 1)], rel=1e-12)
        assert min(seen) > 0 and opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-15)  # 0 once the run is done

    def test_constant_with_warmup_ramps_then_holds(self):
        train = _train(lr=1.0, warmup_steps=4)
        factors = [optimizers.lr_factor(s, train.lr_schedule, train.warmup_steps, None) for s in range(7)]
        assert factors == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]

    def test_cosine_without_the_run_length_says_so(self):
        with pytest.raises(RuntimeError, match="total_steps"):
            optimizers.lr_factor(1, "cosine", 0, None)

    @pytest.mark.parametrize("family", FAMILIES)
    def test_trainer_resumes_exactly_from_its_state(self, family, digits):
        """k steps, state_dict, a fresh trainer loads it and goes on: the same losses and rates as one run."""
        keys = dict(optimizer="sgd", momentum=0.9, lr=0.02, lr_schedule="cosine", warmup_steps=2, grad_clip=1.0)
        batches = [digits.train.batch(torch.arange(i * 8, (i + 1) * 8)) for i in range(4)]

        def run(trainer, part):
            out = []
            for x, y in part:
                metrics = trainer.step(x, y).metrics
                out.append((sorted((k, float(v)) for k, v in metrics.items()), _lrs(trainer)))
            return out

        whole = _trainer(family, digits, **keys)
        whole.total_steps = 4
        torch.manual_seed(1)
        expected = run(whole, batches)

        first = _trainer(family, digits, **keys)
        first.total_steps = 4
        torch.manual_seed(1)
        got = run(first, batches[:2])
        state, rng = copy.deepcopy(first.state_dict()), torch.get_rng_state()
        second = _trainer(family, digits, **keys)
        second.total_steps = 4
        second.load_state_dict(state)
        torch.set_rng_state(rng)
        got += run(second, batches[2:])
        assert got == expected

    @pytest.mark.parametrize("family", FAMILIES)
    @pytest.mark.parametrize("schedule", ["constant", "cosine"])
    def test_a_rollback_halving_survives_the_schedule(self, family, schedule, digits):
        """The worker's rollback halves `lr` in every saved param group (worker.py); the schedule keeps it halved."""
        trainer = _trainer(family, digits, lr_schedule=schedule, warmup_steps=1)
        trainer.total_steps = 10
        x, y = digits.train.batch(torch.arange(16))
        trainer.step(x, y)
        before = _lrs(trainer)
        state = copy.deepcopy(trainer.state_dict())
        for part in state.values():  # what worker._handle_nonfinite does
            for group in part.get("param_groups", []) if isinstance(part, dict) else []:
                group["lr"] *= 0.5
        trainer.load_state_dict(state)
        assert _lrs(trainer) == [lr * 0.5 for lr in before]
        trainer.step(x, y)
        factor = optimizers.lr_factor(2, schedule, 1, 10)
        assert _lrs(trainer) == pytest.approx([0.5 * 1e-3 * factor] * len(before), rel=1e-12)

    def test_a_longer_run_stretches_the_cosine(self, digits):
        trainer = _trainer("vae", digits, lr_schedule="cosine")
        trainer.total_steps = 4
        for i in range(2):
            trainer.step(*digits.train.batch(torch.arange(i * 16, (i + 1) * 16)))
        longer = _trainer("vae", digits, lr_schedule="cosine")
        longer.total_steps = 8  # train.epochs raised on the continued run
        longer.load_state_dict(copy.deepcopy(trainer.state_dict()))
        assert _lrs(longer) == pytest.approx([1e-3 * optimizers.lr_factor(2, "cosine", 0, 8)], rel=1e-12)


def _lrs(trainer) -> list[float]:
    opts = [trainer.opt] if hasattr(trainer, "opt") else [trainer.opt_D, trainer.opt_G]
    return [g["lr"] for opt in opts for g in opt.param_groups]


class TestClipping:
    @pytest.mark.parametrize("max_norm", [None, 0.5, 1e9])
    def test_the_update_is_bounded_and_the_norm_reported_unclipped(self, max_norm):
        torch.manual_seed(0)
        net = nn.Linear(8, 4)
        before = [p.detach().clone() for p in net.parameters()]
        opt = torch.optim.SGD(net.parameters(), lr=1.0)  # the update is the clipped gradient itself
        loss = 100.0 * net(torch.randn(16, 8)).pow(2).mean()
        ok, norm = apply_step(loss, opt, net.parameters(), max_norm)
        step = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, net.parameters())]).norm()
        assert ok and float(norm) > 0.5
        if max_norm is None or max_norm > float(norm):
            assert float(step) == pytest.approx(float(norm), rel=1e-5)
        else:
            assert float(step) == pytest.approx(max_norm, rel=1e-4)

    def test_a_non_finite_gradient_is_still_skipped(self):
        net = nn.Linear(4, 1)
        before = [p.detach().clone() for p in net.parameters()]
        opt = torch.optim.SGD(net.parameters(), lr=1.0)
        ok, norm = apply_step(net(torch.full((2, 4), float("nan"))).sum(), opt, net.parameters(), 1.0)
        assert not ok and not torch.isfinite(norm)
        assert all(torch.equal(b, p) for b, p in zip(before, net.parameters()))


def test_gan_search_space_searches_beta1():
    from genforge.tuning.space import space_entries

    spec = spec_from_dict(tiny_spec("optim-space", "gan"))
    assert space_entries(spec)["train.beta1"].choice == [0.0, 0.5, 0.9]
    custom = spec_from_dict({**tiny_spec("optim-space", "gan"), "tune": {"space": {
        "train.optimizer": {"choice": ["adam", "sgd"]}, "train.grad_clip": {"choice": [1.0, 10.0]}}}})
    assert set(space_entries(custom)) == {"train.optimizer", "train.grad_clip"}
