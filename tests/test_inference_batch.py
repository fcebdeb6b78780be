"""Forward passes that train nothing (sampling, features, the VAE's held-out scores, the ex-post prior's codes) run
at the device's inference batch: 128 images on a CPU, where 500-2,000 at a time ran 1.5-2.5x slower
(evaluation/extractors/base.py). Each case records the batch sizes its network sees. CPU, no Ray."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
from conftest import tiny_spec
from torch import nn

from evaluation.extractors.base import CPU_INFERENCE_BATCH, GPU_INFERENCE_BATCH, inference_batch
from evaluation.extractors.domain import DomainClassifier, DomainExtractor
from genforge.config import spec_from_dict
from genforge.data import load_dataset
from genforge.evaluator.likelihood_eval import score_split
from genforge.models import build_models, get_family
from genforge.models.vae import VAESampler
from genforge.sampling import draw
from genforge.training.latent_prior_fit import posterior_means
from genforge.training.trainer import trainer_class

N = 600  # more than the CPU batch, fewer than the old 1,000-image chunks


def test_the_inference_batch_is_small_on_a_cpu_and_large_on_an_accelerator():
    assert inference_batch("cpu") == inference_batch(None) == CPU_INFERENCE_BATCH == 128
    assert inference_batch(torch.device("cuda", 0)) == GPU_INFERENCE_BATCH > CPU_INFERENCE_BATCH


def _batches_seen(module: nn.Module, run: Callable[[], object]) -> list[int]:
    seen: list[int] = []
    handle = module.register_forward_hook(lambda _m, args, _out: seen.append(len(args[0])))
    try:
        run()
    finally:
        handle.remove()
    return seen


@pytest.fixture(scope="module")
def vae_setup():
    spec = spec_from_dict(tiny_spec("inference-batch"))
    data = load_dataset(spec.data)
    torch.manual_seed(0)
    modules = build_models(spec.model, data.image_shape, data.num_classes)
    return spec, data, modules["vae"].eval()


def _vae_cases(spec, data, vae):
    x = torch.rand(N, *data.image_shape)
    trainer = trainer_class(get_family("vae").pattern)({"vae": vae}, spec, torch.device("cpu"), lambda m: m)
    return {
        # the decoder: generation draws and the importance-weighted NLL's decodes
        "draw": (vae.decoder, lambda: draw(VAESampler(vae), spec.model.latent_dim, N)),
        "score_split": (vae.decoder, lambda: score_split(vae, x, None, 16, seed=0)),
        # the encoder: the ex-post prior's codes and the per-epoch validation numbers
        "posterior_means": (vae.encoder, lambda: posterior_means(vae, data.train)),
        "trainer_evaluate": (vae.encoder, lambda: trainer.evaluate(data.train, "val")),
    }


@pytest.mark.parametrize("case", ["draw", "score_split", "posterior_means", "trainer_evaluate"])
def test_vae_inference_runs_at_the_cpu_batch(vae_setup, case):
    spec, data, vae = vae_setup
    module, run = _vae_cases(spec, data, vae)[case]
    seen = _batches_seen(module, run)
    assert seen and max(seen) <= CPU_INFERENCE_BATCH, seen
    assert max(seen) == CPU_INFERENCE_BATCH or sum(seen) < CPU_INFERENCE_BATCH, seen  # full batches where possible


def test_domain_features_run_at_the_cpu_batch():
    model = DomainClassifier((1, 8, 8), 10)
    extractor = DomainExtractor(model)
    images = torch.rand(N, 1, 8, 8)
    seen = _batches_seen(model.trunk, lambda: extractor.features_and_probs(images))
    assert seen and max(seen) == CPU_INFERENCE_BATCH, seen


@pytest.mark.parametrize("family", ["gan", "cgan"])
def test_gan_inference_runs_at_the_cpu_batch(family):
    spec = spec_from_dict(tiny_spec(f"inference-batch-{family}", family))
    data = load_dataset(spec.data)
    modules = build_models(spec.model, data.image_shape, data.num_classes)
    trainer = trainer_class(get_family(family).pattern)(modules, spec, torch.device("cpu"), lambda m: m)
    labels = torch.arange(N) % data.num_classes if spec.model.conditional else None
    g_seen = _batches_seen(trainer.G_ema, lambda: draw(trainer.sampler(), spec.model.latent_dim, N, labels=labels))
    d_seen = _batches_seen(trainer.D, lambda: trainer.evaluate(data.train, "val"))
    assert max(g_seen) == CPU_INFERENCE_BATCH and max(d_seen) == CPU_INFERENCE_BATCH, (g_seen, d_seen)
