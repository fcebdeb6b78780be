"""GPU figures, when torch sees a CUDA device (otherwise entries with no value, noted "no GPU"):

- images/s per GPU of the 64x64 DCGAN of pipelines/cifar10-gpu.yaml (3x64x64, width 64, spectral norm, DiffAugment
  color,translation,cutout, hinge loss) through genforge's `AdversarialTrainer.step`, which runs the forward
  passes under bf16 autocast on CUDA (training/steps.py), batch 128, one process on one GPU;
- Inception-v3 feature extraction images/s (2048-d pool features and logits of 299x299 inputs): genforge's
  `InceptionExtractor` when the FID weights file is given (GENFORGE_INCEPTION_WEIGHTS), else torchvision's
  Inception-v3 architecture with random weights (the same network size; the weights cannot be downloaded here).

Each is timed over windows of steps (after warm-up) with `torch.cuda.synchronize()` at the window edges.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import torch

from benchmarks.report import Entry
from benchmarks.timing import Stats

FAMILY = "gpu"


def _no_gpu() -> list[Entry]:
    note = "no GPU: torch.cuda.is_available() is False on this machine"
    return [Entry("gpu_dcgan64_bf16_train", None, "img/s per GPU", family=FAMILY, note=note),
            Entry("gpu_inception_features", None, "img/s", family=FAMILY, note=note)]


def _windows(step: Callable[[], Any], images_per_step: int, warmup: int, windows: int, per_window: int) -> Stats:
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    rates = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(per_window):
            step()
        torch.cuda.synchronize()
        rates.append(per_window * images_per_step / (time.perf_counter() - t0))
    return Stats.of(rates)


def dcgan_rate(batch: int = 128, windows: int = 5, per_window: int = 20) -> Stats:
    """genforge's adversarial step on random 64x64 RGB batches on cuda:0 (bf16 autocast inside the trainer)."""
    from genforge.config import spec_from_dict
    from genforge.models import build_models
    from genforge.training.trainer import trainer_class

    spec = spec_from_dict({"name": "bench-gpu", "data": {"dataset": "cifar10"},
                           "model": {"family": "gan", "latent_dim": 128, "width": 64, "gan_loss": "hinge",
                                     "spectral_norm": True, "diffaugment": "color,translation,cutout"},
                           "train": {"batch_size": batch, "use_gpu": True}})
    device = torch.device("cuda", 0)
    torch.manual_seed(0)
    modules = build_models(spec.model, (3, 64, 64), 10)
    trainer = trainer_class("adversarial")(modules, spec, device, lambda m: m)
    x = torch.rand(batch, 3, 64, 64, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    return _windows(lambda: trainer.step(x, y), batch, warmup=10, windows=windows, per_window=per_window)


def inception_rate(batch: int = 200, windows: int = 5, per_window: int = 10) -> tuple[Stats, str]:
    """Images/s of Inception features of 28x28-sized inputs resized to 299 (genforge's path when weights exist)."""
    device = torch.device("cuda", 0)
    weights = os.environ.get("GENFORGE_INCEPTION_WEIGHTS")
    images = torch.rand(batch, 3, 64, 64, device=device)
    if weights and os.path.isfile(weights):
        from evaluation.extractors import InceptionExtractor

        ex = InceptionExtractor(weights, device=device, batch_size=batch)
        return _windows(lambda: ex.features_and_probs(images), batch, 2, windows, per_window), "genforge extractor"
    import torch.nn.functional as F
    import torchvision

    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).eval().to(device)

    @torch.no_grad()
    def step():
        return net(F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False))

    return _windows(step, batch, 2, windows, per_window), "torchvision architecture, random weights (no FID file)"


def run() -> list[Entry]:
    if not torch.cuda.is_available():
        return _no_gpu()
    name = torch.cuda.get_device_name(0)
    gan = dcgan_rate()
    inc, how = inception_rate()
    return [
        Entry("gpu_dcgan64_bf16_train", gan.median, "img/s per GPU", family=FAMILY, spread=gan.spread(),
              repeats=gan.n, note=f"{name}; genforge AdversarialTrainer.step, bf16 autocast, batch 128, 3x64x64"),
        Entry("gpu_inception_features", inc.median, "img/s", family=FAMILY, spread=inc.spread(), repeats=inc.n,
              note=f"{name}; Inception-v3 at 299x299, fp32; {how}"),
    ]
