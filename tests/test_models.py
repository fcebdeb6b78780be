"""Model families: shapes at every supported resolution, loss parts against closed forms, no glue imports."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import FAMILIES

from genforge.config import spec_from_dict
from genforge.models import build_models, get_family
from genforge.models.blocks import resolution_plan
from genforge.models.diffaugment import diff_augment
from genforge.models.gan import d_loss, g_loss, r1_penalty
from genforge.models.vae import VAE


def _model_cfg(family: str, **kw):
    return spec_from_dict({"name": "m", "model": {"family": family, "latent_dim": 6, "width": 8, **kw}}).model


@pytest.mark.parametrize("size,plan", [(8, (4, 1)), (28, (7, 2)), (32, (4, 3)), (64, (4, 4))])
def test_resolution_plan(size, plan):
    assert resolution_plan(size) == plan


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64)])
class TestShapes:
    def test_sampler_output_in_unit_range(self, family, shape):
        modules = build_models(_model_cfg(family), shape, 10)
        sampler = get_family(family).sampler(modules).eval()
        z = torch.randn(3, 6)
        with torch.no_grad():
            out = sampler(z, torch.tensor([0, 1, 2])) if get_family(family).conditional else sampler(z)
        assert out.shape == (3, *shape)
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0

    def test_training_modules(self, family, shape):
        modules = build_models(_model_cfg(family), shape, 10)
        x, y = torch.rand(4, *shape), torch.randint(0, 10, (4,))
        if get_family(family).pattern == "likelihood":
            out = modules["vae"](x, y if family == "cvae" else None)
            assert out.recon.shape == x.shape and out.loss.ndim == 0
        else:
            assert set(modules) == {"G", "D", "G_ema"}
            assert modules["D"](x * 2 - 1, y if family == "cgan" else None).shape == (4,)


def test_vae_loss_parts_match_closed_forms():
    torch.manual_seed(0)
    vae = VAE((1, 8, 8), latent_dim=3, width=8, beta=0.5)
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        out = vae(x)
    # KL(N(mu, s^2) || N(0, 1)) = 0.5 * sum(mu^2 + s^2 - 1 - log s^2)
    kl = 0.5 * (out.mu**2 + out.logvar.exp() - 1 - out.logvar).sum(1).mean()
    torch.testing.assert_close(out.kl, kl)
    torch.testing.assert_close(out.loss, out.recon_loss + 0.5 * out.kl)
    torch.testing.assert_close(out.neg_elbo, out.recon_loss + out.kl)
    # Bernoulli log-likelihood of [0, 1] intensities is minus the summed binary cross-entropy.
    logits = torch.randn(5, 1, 8, 8)
    bce = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="none").flatten(1).sum(1)
    torch.testing.assert_close(-vae.log_likelihood(x, logits), bce, rtol=1e-4, atol=1e-4)


def test_gaussian_likelihood_is_the_bin_mass_of_8bit_pixels():
    """Discretised Gaussian (Salimans et al. 2017): log of Phi((x + h - mu) / s) - Phi((x - h - mu) / s), h = 1/510."""
    from scipy.stats import norm

    vae = VAE((1, 8, 8), latent_dim=2, width=8, likelihood="gaussian")
    x = torch.full((1, 1, 8, 8), 64 / 255)
    logits = torch.zeros(1, 1, 8, 8)  # mean 0.5, sigma 1
    h = 0.5 / 255
    expected = 64 * math.log(norm.cdf(64 / 255 + h - 0.5) - norm.cdf(64 / 255 - h - 0.5))
    assert math.isclose(float(vae.log_likelihood(x, logits).detach()), expected, rel_tol=1e-6)


def test_gan_losses_closed_forms():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    ns = (sp(-2.0) + sp(1.0)) / 2 + (sp(0.5) + sp(-3.0)) / 2
    assert math.isclose(float(d_loss(real, fake, "nonsaturating")), ns, rel_tol=1e-6)
    hinge = (max(0, 1 - 2.0) + max(0, 1 + 1.0)) / 2 + (max(0, 1 + 0.5) + max(0, 1 - 3.0)) / 2
    assert math.isclose(float(d_loss(real, fake, "hinge")), hinge, rel_tol=1e-6)
    assert math.isclose(float(g_loss(fake, "nonsaturating")), (sp(-0.5) + sp(3.0)) / 2, rel_tol=1e-6)
    assert math.isclose(float(g_loss(fake, "hinge")), 1.25, rel_tol=1e-6)


def test_r1_of_a_linear_critic_is_its_squared_weight_norm():
    w = torch.tensor([3.0, 4.0])
    x = torch.randn(6, 2, requires_grad=True)
    assert math.isclose(float(r1_penalty(x @ w, x)), 25.0, rel_tol=1e-6)


def test_diffaugment_shapes_and_identity():
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    assert torch.equal(diff_augment(x, ""), x)
    out = diff_augment(x, "color,translation,cutout")
    assert out.shape == x.shape and not torch.equal(out, x)
    x.requires_grad_(True)
    diff_augment(x, "color,translation,cutout").sum().backward()
    assert x.grad is not None  # differentiable, so G learns through it


def test_models_never_import_ray_or_mlflow():
    code = "import sys, genforge.models; print([m for m in ('ray', 'mlflow') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
