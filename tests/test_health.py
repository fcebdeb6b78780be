"""Training-health signals (training/health.py) against independent computations, and the monitor's warnings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genforge.training.health import (
    HealthMonitor,
    active_units,
    class_coverage,
    class_entropy,
    discriminator_accuracy,
    kl_per_dimension,
    sample_diversity,
)


def _pdist_mean(x: torch.Tensor) -> float:
    """Mean L2 distance over all pairs i < j, in numpy (scipy.spatial would cost a second of import)."""
    a = x.flatten(1).double().numpy()
    d = np.sqrt(((a[:, None, :] - a[None, :, :]) ** 2).sum(-1))
    return float(d[np.triu_indices(len(a), k=1)].mean())


def _entropy(counts: list[int]) -> float:
    p = np.asarray(counts, dtype=np.float64) / sum(counts)
    return float(-(p[p > 0] * np.log(p[p > 0])).sum())


def _probs(counts: list[int]) -> torch.Tensor:
    """(N, C) one-hot rows: counts[c] samples predicted as class c, in shuffled order."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    return torch.nn.functional.one_hot(labels, len(counts)).float() * 0.9 + 0.01


class TestKLPerDimension:
    def test_matches_torch_distributions(self):
        g = torch.Generator().manual_seed(0)
        mu, logvar = torch.randn(64, 6, generator=g) * 2, torch.randn(64, 6, generator=g)
        q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
        p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
        expected = torch.distributions.kl_divergence(q, p).mean(0)
        got = kl_per_dimension(mu, logvar)
        assert got.shape == (6,)
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)  # torch.testing costs a second of import

    def test_zero_for_the_prior_and_sums_to_the_vae_kl(self):
        assert kl_per_dimension(torch.zeros(8, 3), torch.zeros(8, 3)).abs().max() == 0
        mu, logvar = torch.randn(16, 4), torch.randn(16, 4)
        vae_kl = (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)).mean()  # models/vae.py's kl
        assert torch.allclose(kl_per_dimension(mu, logvar).sum(), vae_kl, rtol=1e-5)

    def test_rejects_mismatched_shapes(self):
        with pytest.raises(ValueError):
            kl_per_dimension(torch.zeros(4, 3), torch.zeros(4, 2))


class TestActiveUnits:
    def test_counts_dimensions_by_known_variance(self):
        signs = torch.tensor([1.0, -1.0]).repeat(50)  # mean 0, biased variance 1: column s * signs has variance s^2
        stds = [0.0, 0.05, 0.0999, 0.1001, 0.5, 1.0, 3.0]  # variances 0, .0025, .00998, .01002, .25, 1, 9
        mu = torch.stack([s * signs + 7.0 for s in stds], dim=1)  # an offset changes no variance
        assert active_units(mu) == 4
        assert active_units(mu, threshold=0.5) == 2
        assert active_units(mu) == int((np.var(mu.numpy().astype(np.float64), axis=0) > 0.01).sum())

    def test_uses_the_biased_variance(self):
        # N = 4 values +-s with s^2 = 0.0095: biased variance 0.0095 (inactive), unbiased 0.0127 (would be active).
        mu = (math.sqrt(0.0095) * torch.tensor([1.0, -1.0, 1.0, -1.0])).unsqueeze(1)
        assert float(mu.var(correction=1)) > 0.01
        assert active_units(mu) == 0

    def test_random_posterior_means(self):
        mu = torch.randn(2000, 5, generator=torch.Generator().manual_seed(1)) * torch.tensor([0.0, 0.01, 0.2, 1, 2])
        assert active_units(mu) == 3


class TestSampleDiversity:
    def test_all_pairs_match_numpy(self):
        g = torch.Generator().manual_seed(0)
        fake, real = torch.rand(30, 1, 4, 4, generator=g) * 0.5, torch.rand(40, 1, 4, 4, generator=g)
        expected = _pdist_mean(fake) / _pdist_mean(real)
        assert sample_diversity(fake, real, pairs=None) == pytest.approx(expected, rel=1e-5)
        assert sample_diversity(fake, real, pairs=10**6) == pytest.approx(expected, rel=1e-5)

    def test_sampled_pairs_are_seeded_and_near_the_exact_value(self):
        g = torch.Generator().manual_seed(0)
        fake, real = torch.rand(200, 3, 8, 8, generator=g), torch.rand(200, 3, 8, 8, generator=g) * 2
        exact = sample_diversity(fake, real, pairs=None)
        sampled = sample_diversity(fake, real, pairs=2000, seed=3)
        assert sampled == sample_diversity(fake, real, pairs=2000, seed=3)
        assert sampled != sample_diversity(fake, real, pairs=2000, seed=4)
        assert sampled == pytest.approx(exact, rel=0.03)
        assert exact == pytest.approx(0.5, rel=0.03)  # uniform [0, 1] vs [0, 2]: distances scale by 2

    def test_zero_for_identical_samples(self):
        real = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        assert sample_diversity(real[:1].expand(64, -1, -1, -1), real) == 0.0

    def test_near_one_for_samples_from_the_data_distribution(self):
        g = torch.Generator().manual_seed(0)
        centres = torch.rand(10, 1, 8, 8, generator=g)  # a 10-mode mixture, like classes

        def draw(n: int) -> torch.Tensor:
            modes = torch.randint(0, 10, (n,), generator=g)
            return (centres[modes] + 0.1 * torch.randn(n, 1, 8, 8, generator=g)).clamp(0, 1)

        assert sample_diversity(draw(500), draw(500)) == pytest.approx(1.0, abs=0.05)
        collapsed = (centres[0] + 0.1 * torch.randn(500, 1, 8, 8, generator=g)).clamp(0, 1)  # one mode
        assert sample_diversity(collapsed, draw(500)) < 0.6

    def test_rejects_bad_input(self):
        with pytest.raises(ValueError):
            sample_diversity(torch.rand(1, 4), torch.rand(5, 4))
        with pytest.raises(ValueError):
            sample_diversity(torch.rand(5, 4), torch.rand(5, 3))
        with pytest.raises(ValueError):
            sample_diversity(torch.rand(5, 4), torch.ones(5, 4))


class TestClassCoverage:
    @pytest.mark.parametrize(
        "counts, expected",
        [
            ([10] * 10, 1.0),
            ([100] + [0] * 9, 0.1),
            ([1, 1, 1] + [13] * 7 + [6], 8 / 11),  # N = 100, C = 11: 0.2 * 100 / 11 = 1.82, so 1 is uncovered
            ([2, 19, 19, 20, 20], 0.8),  # N = 80, C = 5: 0.2 * 16 = 3.2 > 2
            ([0, 0, 3, 3], 0.5),
        ],
    )
    def test_constructed_histograms(self, counts, expected):
        assert class_coverage(_probs(counts)) == pytest.approx(expected)

    def test_threshold_is_inclusive_and_adjustable(self):
        counts = [2] + [12] * 9  # fair share 11.0 -> 0.2 * 11 = 2.2: class 0 uncovered; min_share 2/11 covers it
        assert class_coverage(_probs(counts)) == pytest.approx(0.9)
        assert class_coverage(_probs(counts), min_share=2 / 11) == pytest.approx(1.0)
        assert class_coverage(_probs(counts), min_share=0.0) == 1.0

    def test_uses_the_argmax_of_logits_too(self):
        probs = _probs([5, 0, 5])
        assert class_coverage(probs.log()) == class_coverage(probs) == pytest.approx(2 / 3)

    @pytest.mark.parametrize("counts", [[10] * 10, [100] + [0] * 9, [50, 30, 15, 5], [1, 0, 3]])
    def test_entropy_matches_numpy(self, counts):
        assert class_entropy(_probs(counts)) == pytest.approx(_entropy(counts) / math.log(len(counts)), abs=1e-12)

    def test_entropy_extremes(self):
        assert class_entropy(_probs([7] * 4)) == pytest.approx(1.0)
        assert class_entropy(_probs([0, 9, 0])) == 0.0


class TestDiscriminatorAccuracy:
    def test_constructed_logits(self):
        real = torch.tensor([3.0, 0.1, -0.2, 0.0, 5.0])  # 3 of 5 > 0 (0 is not)
        fake = torch.tensor([-1.0, -0.01, 0.0, 2.0])  # 2 of 4 < 0
        assert discriminator_accuracy(real, fake) == (pytest.approx(0.6), pytest.approx(0.5))

    def test_perfect_and_matches_the_trainer_metric(self):
        logits = torch.randn(1000, generator=torch.Generator().manual_seed(0))
        real_acc, fake_acc = discriminator_accuracy(logits, logits)
        assert real_acc + fake_acc == pytest.approx(1.0)  # no exact zeros among Gaussian draws
        assert real_acc == pytest.approx(float((logits > 0).float().mean()))
        assert discriminator_accuracy(logits.abs() + 1, -logits.abs() - 1) == (1.0, 1.0)


def _ticks(monitor: HealthMonitor, rows: list[dict[str, float]]) -> tuple[list[dict[str, float]], list[str]]:
    flags, lines = [], []
    for row in rows:
        f, w = monitor.update(row)
        flags.append(f)
        lines.extend(w)
    return flags, lines


class TestHealthMonitor:
    def test_missing_keys_mean_no_flag_and_no_warning(self):
        monitor = HealthMonitor(latent_dim=8)
        assert monitor.update({"loss": 1.0, "grad_norm": 3.0}) == ({}, [])
        assert monitor.update({"sample_diversity": float("nan")}) == ({}, [])  # NaN cannot be judged
        assert monitor.update({"d_real_acc": 1.0}) == ({}, [])  # one of the pair, and window not full

    def test_d_overpowering_warns_once_and_recovers_once(self):
        monitor = HealthMonitor()
        strong = {"d_real_acc": 1.0, "d_fake_acc": 0.995}
        flags, lines = _ticks(monitor, [strong] * 4)
        assert flags == [{}] * 4 and lines == []  # fewer than window=5 ticks: cannot judge yet
        flags, lines = _ticks(monitor, [strong, {"loss": 1.0}, strong, strong])  # a row without them: not counted
        assert [f["health/d_overpowering"] for f in flags] == [1.0] * 4
        assert len(lines) == 1 and lines[0].startswith("WARNING: discriminator overpowering: D accuracy >= 0.99")
        assert "d_real_acc=1.000, d_fake_acc=0.995" in lines[0] and "train.lr_d" in lines[0]
        weak = {"d_real_acc": 0.9, "d_fake_acc": 0.9}
        flags, lines = _ticks(monitor, [weak] + [strong] * 3)  # means 0.98 while the weak tick is in the window
        assert [f["health/d_overpowering"] for f in flags] == [0.0] * 4
        assert len(lines) == 1 and lines[0].startswith("RECOVERED: discriminator")
        flags, lines = _ticks(monitor, [strong] * 2)  # the weak tick leaves the window: a second onset
        assert [f["health/d_overpowering"] for f in flags] == [0.0, 1.0] and len(lines) == 1

    def test_d_overpowering_needs_both_real_and_fake(self):
        monitor = HealthMonitor(window=2)
        flags, lines = _ticks(monitor, [{"d_real_acc": 1.0, "d_fake_acc": 0.5}] * 3)
        assert flags[-1] == {"health/d_overpowering": 0.0} and lines == []

    def test_mode_collapse_from_the_latest_values(self):
        monitor = HealthMonitor()
        assert monitor.update({"sample_diversity": 0.9}) == ({"health/mode_collapse": 0.0}, [])
        flags, lines = monitor.update({"sample_diversity": 0.1})
        assert flags == {"health/mode_collapse": 1.0} and len(lines) == 1
        assert lines[0].startswith("WARNING: mode collapse: sample_diversity=0.100 < 0.25")
        assert monitor.update({"class_coverage": 0.9}) == ({"health/mode_collapse": 1.0}, [])  # diversity still 0.1
        assert monitor.update({"loss": 2.0}) == ({"health/mode_collapse": 1.0}, [])  # remembered, no repeat
        flags, lines = monitor.update({"sample_diversity": 0.8})
        assert flags == {"health/mode_collapse": 0.0} and len(lines) == 1 and lines[0].startswith("RECOVERED")
        flags, lines = monitor.update({"class_coverage": 0.4, "sample_diversity": 0.8})
        assert flags == {"health/mode_collapse": 1.0} and "class_coverage=0.400 < 0.5" in lines[0]

    def test_posterior_collapse_rules(self):
        assert HealthMonitor().update({"val_active_units": 0.0})[0] == {"health/posterior_collapse": 1.0}
        assert HealthMonitor().update({"val_active_units": 2.0})[0] == {"health/posterior_collapse": 0.0}
        flags, lines = HealthMonitor(latent_dim=32).update({"val_active_units": 2.0})  # 2/32 < 10%
        assert flags == {"health/posterior_collapse": 1.0} and "val_active_units=2/32" in lines[0]
        assert HealthMonitor(latent_dim=20).update({"val_active_units": 2.0})[0] == {"health/posterior_collapse": 0.0}
        flags, lines = HealthMonitor().update({"val_kl_max_dim": 0.005, "val_active_units": 3.0})
        assert flags == {"health/posterior_collapse": 1.0} and "val_kl_max_dim=0.0050 < 0.01" in lines[0]
        assert "model.beta" in lines[0]

    def test_posterior_collapse_recovers_once(self):
        monitor = HealthMonitor(latent_dim=16)
        rows = [{"val_active_units": 0.0, "val_kl_max_dim": 0.001}] * 3 + [{"val_active_units": 8.0}]
        flags, lines = _ticks(monitor, rows + [{"val_kl_max_dim": 0.5}] * 2)
        assert [f["health/posterior_collapse"] for f in flags] == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
        assert len(lines) == 2 and lines[0].startswith("WARNING: posterior collapse")
        assert lines[1] == "RECOVERED: posterior collapse over: val_active_units=8/16, val_kl_max_dim=0.5000"

    def test_thresholds_are_overridable_and_conditions_independent(self):
        monitor = HealthMonitor(window=1, d_acc_max=0.8, min_diversity=0.5, min_kl_max_dim=0.1)
        flags, lines = monitor.update(
            {"d_real_acc": 0.85, "d_fake_acc": 0.9, "sample_diversity": 0.4, "val_kl_max_dim": 0.05}
        )
        assert flags == {"health/d_overpowering": 1.0, "health/mode_collapse": 1.0, "health/posterior_collapse": 1.0}
        assert len(lines) == 3 and all(line.startswith("WARNING: ") for line in lines)
        assert all("\n" not in line for line in lines)

    def test_accepts_zero_dim_tensors(self):
        monitor = HealthMonitor(window=1)
        flags, _ = monitor.update({"d_real_acc": torch.tensor(1.0), "d_fake_acc": torch.tensor(1.0)})
        assert flags == {"health/d_overpowering": 1.0}


def test_sample_diversity_chunking_changes_nothing(monkeypatch):
    import genforge.training.health as health

    g = torch.Generator().manual_seed(0)
    fake, real = torch.rand(50, 1, 4, 4, generator=g), torch.rand(60, 1, 4, 4, generator=g)
    whole = sample_diversity(fake, real, pairs=500, seed=1)
    monkeypatch.setattr(health, "PAIR_CHUNK_ELEMENTS", 16 * 7)  # 7 pairs a chunk: 72 chunks per set
    assert sample_diversity(fake, real, pairs=500, seed=1) == pytest.approx(whole, rel=1e-9)
