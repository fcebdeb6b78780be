"""Metrics agree with closed forms and with independent reference implementations
(prdc, scikit-image, torchmetrics, scipy's sqrtm), and keep their invariants."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.linalg

import evaluation as ev
from evaluation.kid import polynomial_mmd2


def _gauss(n, d, seed, shift=0.0, scale=1.0):
    return np.random.default_rng(seed).normal(shift, scale, size=(n, d))


def _sqrtm_fid(a, b):
    """The textbook formulation (pytorch-fid / torch-fidelity) as the reference."""
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


class TestFrechetDistance:
    def test_closed_form_for_known_gaussian_statistics(self):
        # Diagonal Gaussians: FD = |mu1-mu2|^2 + sum (s1 + s2 - 2 sqrt(s1 s2)) = |dmu|^2 + sum (sqrt s1 - sqrt s2)^2
        d = 6
        var1, var2 = np.linspace(0.5, 2.0, d), np.linspace(1.0, 3.0, d)
        s1 = ev.FeatureStats(np.zeros(d), np.diag(var1), 100)
        s2 = ev.FeatureStats(np.full(d, 0.5), np.diag(var2), 100)
        expected = d * 0.25 + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
        assert math.isclose(ev.frechet_distance(s1, s2), expected, rel_tol=1e-12)

    def test_closed_form_non_diagonal_commuting(self):
        rng = np.random.default_rng(0)
        q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
        a, b = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
        s1 = ev.FeatureStats(np.zeros(5), q @ np.diag(a) @ q.T, 10)
        s2 = ev.FeatureStats(np.zeros(5), q @ np.diag(b) @ q.T, 10)
        assert math.isclose(ev.frechet_distance(s1, s2), ((np.sqrt(a) - np.sqrt(b)) ** 2).sum(), rel_tol=1e-10)

    def test_agrees_with_sqrtm_reference(self):
        a, b = _gauss(500, 32, 1), _gauss(400, 32, 2, shift=0.3, scale=1.2)
        assert math.isclose(ev.frechet_distance(a, b), _sqrtm_fid(a, b), rel_tol=1e-9)

    def test_self_distance_zero_and_symmetry(self):
        a, b = _gauss(300, 16, 3), _gauss(300, 16, 4, shift=0.1)
        assert ev.frechet_distance(a, a) < 1e-9
        assert math.isclose(ev.frechet_distance(a, b), ev.frechet_distance(b, a), rel_tol=1e-9)

    def test_cached_stats_equal_fresh(self):
        a, b = _gauss(300, 16, 5), _gauss(300, 16, 6, shift=0.2)
        cached = ev.feature_stats(a)
        cached.factor()
        restored = ev.FeatureStats.from_dict(cached.to_dict())
        assert ev.frechet_distance(restored, b) == pytest.approx(ev.frechet_distance(a, b), rel=1e-12)

    def test_fewer_samples_than_dimensions_warns_and_stays_exact(self):
        a, b = _gauss(20, 40, 7), _gauss(25, 40, 8, shift=0.2)
        with pytest.warns(UserWarning, match="singular"):
            value = ev.frechet_distance(a, b)
        assert math.isclose(value, _sqrtm_fid(a, b), rel_tol=1e-6)

    @pytest.mark.parametrize(
        "a,b,needle",
        [
            (np.zeros((10, 3)), np.zeros((10, 4)), "dimensions differ"),
            (np.full((10, 3), np.nan), np.zeros((10, 3)), "NaN"),
            (np.zeros((1, 3)), np.zeros((10, 3)), "at least 2"),
            (np.zeros(10), np.zeros((10, 3)), "(N, d)"),
        ],
    )
    def test_bad_input(self, a, b, needle):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(ev.MetricInputError, match=__import__("re").escape(needle)):
                ev.frechet_distance(a, b)


class TestKID:
    def test_subset_estimator_matches_torchmetrics(self):
        import torch
        from torchmetrics.image.kid import poly_mmd

        a, b = _gauss(200, 24, 9), _gauss(200, 24, 10, shift=0.2)
        reference = float(poly_mmd(torch.from_numpy(a), torch.from_numpy(b), degree=3, gamma=1 / 24, coef=1.0))
        assert math.isclose(polynomial_mmd2(a, b), reference, rel_tol=1e-9)

    def test_near_zero_for_same_distribution_positive_otherwise(self):
        a, a2, b = _gauss(600, 16, 11), _gauss(600, 16, 12), _gauss(600, 16, 13, shift=0.5)
        same, _ = ev.kid(a, a2, subsets=20, subset_size=200)
        diff, std = ev.kid(a, b, subsets=20, subset_size=200)
        assert abs(same) < 5 * std + 1e-3 and diff > 10 * abs(same) and std > 0

    def test_subset_size_capped_by_samples_and_seeded(self):
        """Asking for subsets of 1,000 from 50 and 60 samples uses subsets of 50: the same numbers as asking for
        50, and the same as the unbiased MMD^2 written out by hand over the seeded subsets."""
        a, b = _gauss(50, 8, 14), _gauss(60, 8, 15)
        capped = ev.kid(a, b, subsets=5, subset_size=1000, seed=1)
        assert capped == ev.kid(a, b, subsets=5, subset_size=50, seed=1)
        assert capped != ev.kid(a, b, subsets=5, subset_size=40, seed=1)
        rng, d, values = np.random.default_rng(1), a.shape[1], []
        for _ in range(5):
            x, y = a[rng.choice(50, 50, replace=False)], b[rng.choice(60, 50, replace=False)]
            k = lambda u, v: (u @ v.T / d + 1.0) ** 3  # noqa: E731
            kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
            m = 50
            values.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                          - 2 * kxy.mean())
        assert capped[0] == pytest.approx(np.mean(values), rel=1e-10)


class TestPRDC:
    @pytest.mark.parametrize("k", [3, 5])
    def test_matches_prdc_package(self, k):
        from prdc import compute_prdc

        a, b = _gauss(400, 10, 16), _gauss(300, 10, 17, shift=0.4, scale=0.8)
        ref = compute_prdc(a, b, nearest_k=k)
        p, r = ev.precision_recall(a, b, k=k)
        d, c = ev.density_coverage(a, b, k=k)
        expected = (ref["precision"], ref["recall"], ref["density"], ref["coverage"])
        assert (p, r, d, c) == pytest.approx(expected, abs=1e-12)

    def test_chunking_does_not_change_results(self, monkeypatch):
        import evaluation.prdc as prdc_mod

        a, b = _gauss(300, 5, 18), _gauss(300, 5, 19, shift=0.3)
        full = ev.precision_recall(a, b) + ev.density_coverage(a, b)
        monkeypatch.setattr(prdc_mod, "_CHUNK", 7)
        assert ev.precision_recall(a, b) + ev.density_coverage(a, b) == full

    def test_collapsed_fakes_have_low_recall_and_coverage(self):
        a = _gauss(500, 8, 20)
        collapsed = np.repeat(a[:1], 500, axis=0) + 1e-6 * _gauss(500, 8, 21)
        _, recall = ev.precision_recall(a, collapsed)
        _, coverage = ev.density_coverage(a, collapsed)
        assert recall < 0.05 and coverage < 0.05


class TestImageQuality:
    def _images(self, seed, shape=(4, 3, 32, 32)):
        rng = np.random.default_rng(seed)
        x = rng.uniform(0, 1, shape)
        return x, np.clip(x + rng.normal(0, 0.1, shape), 0, 1)

    def test_ssim_matches_scikit_image(self):
        from skimage.metrics import structural_similarity

        x, y = self._images(22)
        ref = np.mean(
            [
                structural_similarity(
                    a, b, data_range=1.0, channel_axis=0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
                )
                for a, b in zip(x, y)
            ]
        )
        assert math.isclose(ev.ssim(x, y), ref, rel_tol=1e-9)

    def test_psnr_matches_scikit_image(self):
        from skimage.metrics import peak_signal_noise_ratio

        x, y = self._images(23)
        ref = np.mean([peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in zip(x, y)])
        assert math.isclose(ev.psnr(x, y), ref, rel_tol=1e-12)

    def test_identity_and_small_images(self):
        x, _ = self._images(24, (3, 1, 8, 8))
        assert ev.ssim(x, x) == pytest.approx(1.0) and ev.psnr(x, x) == math.inf and ev.mse(x, x) == 0.0
        assert ev.ssim(x, 1 - x) < 0.5

    def test_bce_closed_form(self):
        x = np.ones((2, 1, 2, 2))
        y = np.full((2, 1, 2, 2), 0.5)
        assert math.isclose(ev.bce(x, y), 4 * math.log(2), rel_tol=1e-6)


class TestScoresAndDiversity:
    def test_inception_score_closed_forms(self):
        confident = np.eye(10)[np.arange(1000) % 10]
        assert ev.inception_score(confident)[0] == pytest.approx(10.0)
        uniform = np.full((1000, 10), 0.1)
        assert ev.inception_score(uniform)[0] == pytest.approx(1.0)

    def test_inception_score_matches_torchmetrics_formula(self):
        rng = np.random.default_rng(25)
        logits = rng.normal(size=(500, 10)) * 3
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        mean, _ = ev.inception_score(probs, splits=1)
        marginal = probs.mean(0)
        expected = math.exp(np.mean((probs * (np.log(probs) - np.log(marginal))).sum(1)))
        assert math.isclose(mean, expected, rel_tol=1e-10)

    def test_pairwise_distance_against_scipy(self):
        from scipy.spatial.distance import pdist

        x = _gauss(200, 6, 26)
        assert math.isclose(ev.mean_pairwise_distance(x), pdist(x).mean(), rel_tol=1e-9)

    def test_class_coverage(self):
        assert ev.class_coverage(np.arange(1000) % 10, 10) == 1.0
        assert ev.class_coverage(np.zeros(1000, dtype=int), 10) == 0.1

    def test_importance_weighted_nll(self):
        lw = np.log(np.array([[0.2, 0.4, 0.6]]))
        assert ev.iw_nll(lw)[0] == pytest.approx(-math.log(0.4))
        assert ev.bits_per_dim(math.log(2) * 784, 784) == pytest.approx(1.0)


class TestRecognition:
    """recognisable and the worst label's accuracy on hand-built probabilities, against their closed forms."""

    def test_recognisable_closed_forms(self):
        assert ev.recognisable(np.eye(10)[np.arange(100) % 10]) == 1.0  # one-hot: every sample certain
        assert ev.recognisable(np.full((100, 10), 0.1)) == 0.0  # uniform: none
        # max probabilities 0.95, 0.9 (the threshold counts), 0.89, 0.5: two of four
        rows = [[0.95, 0.05], [0.9, 0.1], [0.11, 0.89], [0.5, 0.5]]
        assert ev.recognisable(np.array(rows)) == 0.5
        assert ev.recognisable(np.array(rows), threshold=0.5) == 1.0
        rng = np.random.default_rng(3)
        p = rng.dirichlet(np.full(10, 0.2), size=1000)
        assert ev.recognisable(p, 0.7) == pytest.approx(np.mean(p.max(1) >= 0.7))

    def test_recognisable_rejects_what_is_not_a_distribution(self):
        with pytest.raises(ev.MetricInputError, match="probability distributions"):
            ev.recognisable(np.array([[0.7, 0.7]]))
        with pytest.raises(ev.MetricInputError, match="threshold"):
            ev.recognisable(np.array([[0.5, 0.5]]), threshold=0.0)

    def test_worst_label_accuracy(self):
        labels = np.repeat(np.arange(3), 4)  # 4 samples asked for each of labels 0, 1, 2
        predicted = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 0, 0, 0])  # accuracies 1, 3/4, 1/4
        assert ev.per_label_accuracy(predicted, labels) == {0: 1.0, 1: 0.75, 2: 0.25}
        assert ev.worst_label_accuracy(predicted, labels) == 0.25
        assert ev.worst_label_accuracy(labels, labels) == 1.0
        # a model that draws one class whatever it is asked: every other label at 0
        assert ev.worst_label_accuracy(np.zeros(100, dtype=int), np.arange(100) % 10) == 0.0
        with pytest.raises(ev.MetricInputError, match="equal 1-D"):
            ev.worst_label_accuracy(np.zeros(3), np.zeros(4))


def test_both_extractors_satisfy_the_extractor_protocol():
    """The runner calls features_and_probs through the Protocol: both extractors must provide it."""
    import torch

    from evaluation.extractors import DomainClassifier, DomainExtractor, FeatureExtractor, InceptionExtractor

    torch.manual_seed(0)
    domain = DomainExtractor(DomainClassifier((1, 8, 8), 10))
    assert isinstance(domain, FeatureExtractor)
    feats, probs = domain.features_and_probs(torch.rand(3, 1, 8, 8))
    assert feats.shape[0] == probs.shape[0] == 3 and np.allclose(probs.sum(1), 1.0)
    for method in ("features", "probs", "features_and_probs"):
        assert callable(getattr(InceptionExtractor, method))

    class FeaturesOnly:  # the Protocol before features_and_probs was part of it: not an extractor the runner can use
        name, content_hash = "partial", "0"

        def features(self, images):
            return np.zeros((len(images), 2))

        def probs(self, images):
            return np.full((len(images), 2), 0.5)

    assert not isinstance(FeaturesOnly(), FeatureExtractor)
