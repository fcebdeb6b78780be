"""Likelihoods that are likelihoods: Bernoulli on binarised data (fresh bits in training, one fixed binarisation of
held-out splits), Gaussian and Laplace discretised over the 256 8-bit levels. Closed forms of evaluation.likelihood,
the model's torch likelihoods against them, NLL and bits/dim never negative, the protocol naming likelihood and
discretisation, and every likelihood training on digits for vae and cvae (CPU, no Ray)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_spec
from scipy import stats

from evaluation.checks import MetricInputError
from evaluation.likelihood import (
    bernoulli_log_prob,
    binarise,
    bits_per_dim,
    discretised_log_prob,
    quantise_8bit,
)
from genforge.config import spec_from_dict
from genforge.data import load_dataset
from genforge.evaluator import likelihood_eval
from genforge.evaluator.protocol import Protocol
from genforge.models import build_models, get_family
from genforge.models import vae as vae_module
from genforge.models.vae import VAE
from genforge.training.trainer import trainer_class

LEVELS = np.arange(256) / 255.0
CONTINUOUS = ("gaussian", "laplace")
SCALES = {"gaussian": stats.norm, "laplace": stats.laplace}


@pytest.fixture(scope="module")
def digits():
    return load_dataset(spec_from_dict(tiny_spec("lik")).data)


class TestClosedForms:
    def test_bernoulli_at_one_half_is_d_ln_2(self):
        x = binarise(np.random.default_rng(1).random((3, 1, 8, 8)), seed=0)
        nats = -bernoulli_log_prob(x, np.zeros_like(x)).reshape(3, -1).sum(1)
        assert nats == pytest.approx([64 * math.log(2)] * 3, rel=1e-12)
        assert bits_per_dim(nats, 64) == pytest.approx([1.0] * 3)
        model = VAE((1, 8, 8), latent_dim=2, width=8)
        torch_nats = -model.log_likelihood(torch.from_numpy(x).float(), torch.zeros(3, 1, 8, 8))
        assert torch_nats.tolist() == pytest.approx([64 * math.log(2)] * 3, rel=1e-6)

    @pytest.mark.parametrize("kind", CONTINUOUS)
    @pytest.mark.parametrize("mean,scale", [(0.3, 0.05), (0.0, 1e-4), (1.0, 3.0), (0.5, 1e-9), (0.7, 1e6)])
    def test_discretised_bins_sum_to_one(self, kind, mean, scale):
        log_p = discretised_log_prob(LEVELS, mean, scale, kind)
        assert np.exp(log_p).sum() == pytest.approx(1.0, abs=1e-9)
        assert np.all(log_p <= 0.0)  # a mass: the NLL of every pixel is >= 0
        torch_log_p = vae_module.discretised_log_prob(
            torch.from_numpy(LEVELS), torch.full((256,), mean, dtype=torch.float64),
            torch.tensor(math.log(scale), dtype=torch.float64), kind)
        np.testing.assert_allclose(torch_log_p.numpy(), log_p, rtol=1e-9, atol=1e-9)

    @pytest.mark.parametrize("kind", CONTINUOUS)
    def test_a_bin_is_the_cdf_difference(self, kind):
        dist = SCALES[kind](loc=0.4, scale=0.1)
        k = np.array([0, 1, 100, 102, 254, 255])
        lo, hi = (k - 0.5) / 255, (k + 0.5) / 255
        inner = np.where(k / 255 < 0.4, dist.cdf(hi) - dist.cdf(lo), dist.sf(lo) - dist.sf(hi))  # the exact tail
        expected = np.log(np.where(k == 0, dist.cdf(hi), np.where(k == 255, dist.sf(lo), inner)))
        np.testing.assert_allclose(discretised_log_prob(k / 255, 0.4, 0.1, kind), expected, rtol=1e-10)

    @pytest.mark.parametrize("kind", CONTINUOUS)
    def test_a_sharp_decoder_on_the_data_scores_zero_not_minus_infinity(self, kind):
        """The density of 8-bit data under a shrinking scale grows without bound (negative NLL); the mass tends to 1."""
        x = quantise_8bit(np.random.default_rng(0).random(64))
        nats = -discretised_log_prob(x, x, 1e-6, kind).sum()
        assert 0.0 <= nats < 1e-9
        density = SCALES[kind](loc=x, scale=1e-6).logpdf(x).sum()
        assert density > 500  # what a density on undequantised data reports: a 'negative NLL'

    def test_inputs_the_likelihood_is_not_over_are_refused(self):
        with pytest.raises(MetricInputError, match="binary"):
            bernoulli_log_prob(np.full((2, 4), 0.3), np.zeros((2, 4)))
        with pytest.raises(MetricInputError, match="8-bit"):
            discretised_log_prob(np.array([0.3]), 0.5, 0.1, "gaussian")
        with pytest.raises(MetricInputError, match="kind"):
            discretised_log_prob(np.array([0.0]), 0.5, 0.1, "logistic")


class TestDiscretisation:
    def test_fixed_binarisation_is_fixed_batch_independent_and_unbiased(self):
        x = np.random.default_rng(2).random((400, 1, 8, 8))
        whole = binarise(x, seed=0)
        assert set(np.unique(whole)) == {0.0, 1.0} and np.array_equal(whole, binarise(x, seed=0))
        batched = np.concatenate([binarise(x[i : i + 150], seed=0, first_row=i) for i in range(0, 400, 150)])
        assert np.array_equal(whole, batched)
        assert not np.array_equal(whole, binarise(x, seed=1))
        assert abs(whole.mean() - x.mean()) < 0.01

    def test_quantisation_to_8_bits(self):
        eight_bit = np.arange(256) / 255.0
        assert np.array_equal(quantise_8bit(eight_bit.astype(np.float32)), eight_bit)
        digits_levels = np.arange(17) / 16.0  # sklearn's digits: 17 grey levels
        assert np.array_equal(quantise_8bit(digits_levels) * 255, np.round(np.arange(17) * 255 / 16))

    def test_dynamic_binarisation_draws_from_the_torch_rng_and_keeps_nan(self):
        x = torch.rand(4, 1, 8, 8)
        torch.manual_seed(5)
        a = vae_module.observe(x, "bernoulli")
        torch.manual_seed(5)
        assert torch.equal(a, vae_module.observe(x, "bernoulli"))
        assert not torch.equal(a, vae_module.observe(x, "bernoulli"))  # fresh bits every call
        assert set(a.unique().tolist()) <= {0.0, 1.0}
        poisoned = vae_module.observe(torch.full((2, 3), float("nan")), "bernoulli")
        assert torch.isnan(poisoned).all()  # a poisoned batch stays non-finite (train.on_nonfinite sees it)
        for kind in CONTINUOUS:
            assert torch.equal(vae_module.observe(x, kind) * 255, torch.round(x * 255))

    def test_heldout_data_is_what_the_protocol_names(self):
        x = torch.rand(6, 1, 8, 8)
        assert likelihood_eval.discretisation("bernoulli") == "binarised-seed0"
        assert likelihood_eval.discretisation("laplace") == "8bit-discretised"
        assert torch.equal(likelihood_eval.heldout(x, "bernoulli"), torch.from_numpy(binarise(x.numpy(), 0)).float())
        assert torch.equal(likelihood_eval.heldout(x[2:], "bernoulli", first_row=2),
                           likelihood_eval.heldout(x, "bernoulli")[2:])


def _protocol(**fields) -> Protocol:
    base = dict(dataset="digits", dataset_fingerprint="f", split="train", reference_n=10, samples=100, seeds=(0,),
                extractor="domain", extractor_hash="h", kid_subsets=1, kid_subset_size=10)
    return Protocol(**{**base, **fields})


def test_the_protocol_names_likelihood_and_discretisation():
    gan = _protocol()
    bern = _protocol(**likelihood_eval.protocol_fields("bernoulli"))
    gauss = _protocol(**likelihood_eval.protocol_fields("gaussian"))
    laplace = _protocol(**likelihood_eval.protocol_fields("laplace"))
    assert len({gan.hash(), bern.hash(), gauss.hash(), laplace.hash()}) == 4
    assert bern.as_dict()["discretisation"] == "binarised-seed0" and laplace.as_dict()["likelihood"] == "laplace"
    # Models without a likelihood keep the hash they had before the fields existed.
    import hashlib
    import json
    from dataclasses import asdict

    old = {k: v for k, v in asdict(gan).items() if k not in ("likelihood", "discretisation")}
    assert gan.hash() == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:12]


def test_the_evaluator_protocol_reads_the_model_likelihood(digits):
    from genforge.evaluator.metrics import _protocol as evaluator_protocol

    spec = spec_from_dict(tiny_spec("lik-proto", "vae", epochs=1) | {"model": {
        "family": "vae", "latent_dim": 4, "width": 8, "likelihood": "laplace"}})
    modules = build_models(spec.model, digits.image_shape, digits.num_classes)
    model = SimpleNamespace(modules=modules, spec=spec)
    ref = SimpleNamespace(features=np.zeros((7, 2)))
    info = {"name": "domain", "content_hash": "h"}
    protocol = evaluator_protocol(digits, spec.evaluate, ref, info, model)
    assert (protocol.likelihood, protocol.discretisation) == ("laplace", "8bit-discretised")
    assert evaluator_protocol(digits, spec.evaluate, ref, info).likelihood is None


@pytest.mark.parametrize("family", ["vae", "cvae"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "laplace"])
def test_each_likelihood_trains_and_scores_a_proper_nll(family, likelihood, digits):
    spec = spec_from_dict(tiny_spec(f"lik-{family}", family) | {"model": {
        "family": family, "latent_dim": 4, "width": 8, "likelihood": likelihood}})
    torch.manual_seed(0)
    modules = build_models(spec.model, digits.image_shape, digits.num_classes)
    trainer = trainer_class(get_family(family).pattern)(modules, spec, torch.device("cpu"), lambda m: m)
    losses = []
    for i in range(3):
        result = trainer.step(*digits.train.batch(torch.arange(i * 32, (i + 1) * 32)))
        assert result.ok
        losses.append(float(result.metrics["neg_elbo"]))
    assert all(v > 0 for v in losses)
    val = trainer.evaluate(digits.val, "val")
    assert val["val_neg_elbo"] > 0 and val["val_recon_loss"] > 0  # masses and binary data: never negative
    conditional = get_family(family).conditional
    x, y = digits.test.batch(torch.arange(40))
    metrics, recon = likelihood_eval.score_split(trainer.vae, x, y if conditional else None, k=4, seed=0)
    assert recon.shape == x.shape
    assert 0 < metrics["nll_iw_k4"] <= metrics["nll_elbo"] + 5.0  # the bound tightens (up to sampling noise)
    assert metrics["bpd_iw_k4"] > 0
    again, _ = likelihood_eval.score_split(trainer.vae, x, y if conditional else None, k=4, seed=0)
    assert again == metrics  # seeded
