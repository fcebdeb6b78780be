"""The VAE's ex-post sampling prior (Ghosh et al. 2020): the noise transform draws exactly from the fitted
Gaussians, EM agrees with scikit-learn's GaussianMixture, fits are deterministic, and a model from before the
prior loads as N(0, I). CPU, no Ray."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tiny_spec
from scipy import stats

from genforge.config import spec_from_dict
from genforge.data import load_dataset
from genforge.models import build_models, get_family
from genforge.models.latent_prior import LatentPrior
from genforge.training.latent_prior_fit import fit_latent_prior, gaussian_mixture, posterior_means
from genforge.training.trainer import trainer_class

WEIGHT = torch.tensor([0.2, 0.5, 0.3])
MEAN = torch.tensor([[-4.0, 0.0], [0.0, 3.0], [5.0, -1.0]])
TRIL = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.3, 0.0], [0.0, 2.0]], [[2.0, 0.0], [-1.0, 1.0]]])


def _mixture_prior(by_label: bool) -> LatentPrior:
    prior = LatentPrior(3, 2, by_label=by_label)
    prior.set(WEIGHT, MEAN, TRIL)
    return prior


def _mixture_cdf(t: np.ndarray, dim: int) -> np.ndarray:
    """Closed form: the CDF of one coordinate of the mixture, a weighted sum of normal CDFs."""
    sd = torch.sqrt((TRIL @ TRIL.transpose(1, 2))[:, dim, dim]).numpy()
    return sum(w * stats.norm.cdf(t, m, s) for w, m, s in zip(WEIGHT.numpy(), MEAN[:, dim].numpy(), sd))


def test_standard_noise_becomes_an_exact_draw_from_the_mixture():
    z = torch.randn(200_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    drawn = _mixture_prior(by_label=False).double()(z)
    for dim in (0, 1):  # each marginal against the mixture's CDF (both coordinates: z_0 is re-drawn, z_1 is not)
        assert stats.kstest(drawn[:, dim].numpy(), lambda t, d=dim: _mixture_cdf(t, d)).pvalue > 1e-3
    cov_k = TRIL.double() @ TRIL.double().transpose(1, 2)
    mean = (WEIGHT.double()[:, None] * MEAN.double()).sum(0)
    second = (WEIGHT.double()[:, None, None] * (cov_k + MEAN.double()[:, :, None] * MEAN.double()[:, None, :])).sum(0)
    torch.testing.assert_close(drawn.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(drawn.T), second - torch.outer(mean, mean), atol=0.1, rtol=0.01)


def test_a_prior_by_label_draws_from_that_labels_gaussian():
    z = torch.randn(100_000, 2, generator=torch.Generator().manual_seed(1))
    prior = _mixture_prior(by_label=True)
    for label in range(3):
        drawn = prior(z, torch.full((len(z),), label)).double()
        torch.testing.assert_close(drawn.mean(0), MEAN[label].double(), atol=0.03, rtol=0)
        torch.testing.assert_close(torch.cov(drawn.T), (TRIL[label] @ TRIL[label].T).double(), atol=0.05, rtol=0.02)
    with pytest.raises(ValueError, match="labels"):
        prior(z)


def test_an_unfitted_prior_leaves_the_noise_alone():
    z = torch.randn(8, 2)
    assert torch.equal(LatentPrior(3, 2, by_label=False)(z), z)


def _blobs(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, 5, generator=g, dtype=torch.float64) * 4
    return torch.cat([c + torch.randn(300, 5, generator=g, dtype=torch.float64) * (0.4 + 0.2 * i)
                      for i, c in enumerate(centres)])


def _mean_log_likelihood(x: torch.Tensor, weight, mean, tril) -> float:
    parts = [torch.distributions.MultivariateNormal(m, scale_tril=s).log_prob(x) + math.log(w)
             for w, m, s in zip(weight.tolist(), mean, tril)]
    return float(torch.logsumexp(torch.stack(parts), 0).mean())


def test_em_agrees_with_scikit_learns_gaussian_mixture():
    from sklearn.mixture import GaussianMixture

    x = _blobs()
    ours = gaussian_mixture(x, 6)
    reference = GaussianMixture(6, covariance_type="full", reg_covar=1e-4, tol=1e-6, random_state=0).fit(x.numpy())
    assert _mean_log_likelihood(x, *ours) == pytest.approx(reference.score(x.numpy()), abs=0.01)
    order = lambda means: means[np.lexsort(means.T)]  # noqa: E731 - components come in arbitrary order
    np.testing.assert_allclose(order(ours[1].numpy()), order(reference.means_), atol=0.02)
    assert float(ours[0].sum()) == pytest.approx(1.0)


def test_em_warm_started_from_its_own_fit_stays_there():
    x = _blobs(1)
    fit = gaussian_mixture(x, 6)
    again = gaussian_mixture(x, 6, init=fit)
    assert _mean_log_likelihood(x, *again) == pytest.approx(_mean_log_likelihood(x, *fit), abs=1e-3)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(spec_from_dict(tiny_spec("prior")).data)


def _trained(family: str, digits, **model):
    spec = spec_from_dict({**tiny_spec(f"prior-{family}", family), "model": {
        "family": family, "latent_dim": 4, "width": 8, **model}})
    torch.manual_seed(0)
    modules = build_models(spec.model, digits.image_shape, digits.num_classes)
    trainer = trainer_class(get_family(family).pattern)(modules, spec, torch.device("cpu"), lambda m: m)
    for start in range(0, 320, 32):
        trainer.step(*digits.train.batch(torch.arange(start, start + 32)))
    return trainer


@pytest.mark.parametrize("family", ["vae", "cvae"])
def test_the_fit_is_deterministic_and_travels_with_the_weights(family, digits):
    trainer = _trained(family, digits)
    trainer.prepare_sampler(digits)
    prior = trainer.vae.prior
    assert bool(prior.fitted) and float(prior.weight.sum()) == pytest.approx(1.0)
    state = {k: v.clone() for k, v in trainer.vae.state_dict().items()}
    twin = _trained(family, digits)
    twin.prepare_sampler(digits)
    for key in ("prior.mean", "prior.scale_tril", "prior.weight"):  # no RNG: the same weights fit the same prior
        assert torch.equal(twin.vae.state_dict()[key], state[key]), key
    fit_latent_prior(trainer.vae, digits.train)  # the next epoch's refit, warm-started: EM goes on
    torch.testing.assert_close(prior.mean, state["prior.mean"], atol=0.02, rtol=0)  # from where it stopped
    if family == "cvae":  # one Gaussian per label: its mean is that label's mean code
        codes, labels = posterior_means(trainer.vae, digits.train)
        torch.testing.assert_close(prior.mean[3].double(), codes[labels == 3].mean(0), atol=1e-5, rtol=0)
    fresh = _trained(family, digits).vae
    fresh.load_state_dict(state)
    assert torch.equal(fresh.prior.mean, state["prior.mean"]) and bool(fresh.prior.fitted)


@pytest.mark.parametrize("family", ["vae", "cvae"])
def test_a_model_saved_before_the_prior_existed_loads_and_samples_from_n01(family, digits):
    vae = _trained(family, digits).vae
    old = {k: v for k, v in vae.state_dict().items() if not k.startswith("prior.")}
    fresh = _trained(family, digits, sampling_prior="standard").vae
    fresh.load_state_dict(old)  # strict: the prior's buffers default to unfitted
    z = torch.randn(4, 4)
    y = torch.arange(4) if family == "cvae" else None
    assert not bool(fresh.prior.fitted)
    assert torch.equal(get_family(family).sampler({"vae": fresh}).eval()(z, y), fresh.eval().decode(z, y))


def test_a_standard_prior_is_never_fitted(digits):
    trainer = _trained("vae", digits, sampling_prior="standard")
    trainer.prepare_sampler(digits)
    assert not bool(trainer.vae.prior.fitted)
