"""The conditional GAN's auxiliary classifier (AC-GAN, `model.class_loss_weight`): D learns real images' labels, G
is trained by it to draw the label asked for, and only conditional GANs accept the key (CPU, no Ray)."""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILIES, tiny_spec

from genforge.config import spec_from_dict
from genforge.data import load_dataset
from genforge.errors import SpecError
from genforge.families import get_family_info
from genforge.models import build_models
from genforge.training import adversarial_trainer
from genforge.training.adversarial_trainer import AdversarialTrainer


@pytest.fixture(scope="module")
def digits():
    return load_dataset(spec_from_dict(tiny_spec("aux")).data)


def _trainer(digits, weight: float, lr: float = 2e-4) -> AdversarialTrainer:
    tree = tiny_spec("aux-cgan", "cgan", lr=lr)
    tree["model"]["class_loss_weight"] = weight
    spec = spec_from_dict(tree)
    torch.manual_seed(0)
    modules = build_models(spec.model, digits.image_shape, digits.num_classes)
    return AdversarialTrainer(modules, spec, torch.device("cpu"), lambda module: module)


@pytest.mark.parametrize("family", [f for f in FAMILIES if not get_family_info(f).auxiliary_classifier])
def test_only_conditional_gans_accept_a_class_loss(family):
    tree = tiny_spec("aux-refused", family)
    tree["model"]["class_loss_weight"] = 1.0
    with pytest.raises(SpecError, match=r"model.*class_loss_weight.*only conditional GANs"):
        spec_from_dict(tree)


def test_without_the_weight_d_has_no_classifier_and_no_class_losses(digits):
    trainer = _trainer(digits, 0.0)
    assert trainer.D.classifier is None
    x, y = digits.train.batch(torch.arange(32))
    result = trainer.step(x, y)
    assert result.ok and not {"class_loss_d", "class_loss_g"} & set(result.metrics)  # nothing to report
    with pytest.raises(ValueError, match="no auxiliary classifier"):
        trainer.D(x, y, classes=True)


def test_d_learns_the_labels_of_real_images(digits):
    trainer = _trainer(digits, 1.0, lr=2e-3)
    x, y = digits.train.batch(torch.arange(256))
    losses = []
    for step in range(120):
        rows = torch.arange(step * 32, step * 32 + 32) % 256
        losses.append(float(trainer.step(x[rows], y[rows]).metrics["class_loss_d"]))
    assert losses[0] > 2.0  # chance over 10 digits is ln 10 = 2.30
    assert sum(losses[-10:]) / 10 < 0.6 * losses[0]
    with torch.no_grad():
        _, classes = trainer.D(x * 2 - 1, y, classes=True)
    assert float((classes.argmax(1) == y).float().mean()) > 0.6


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_g_is_trained_by_the_classifier(digits, monkeypatch, weight):
    """With the adversarial generator loss taken out, G moves only when the classifier's loss reaches it."""
    monkeypatch.setattr(adversarial_trainer, "g_loss", lambda logits, kind: logits.sum() * 0.0)
    trainer = _trainer(digits, weight)
    before = [p.detach().clone() for p in trainer.G.parameters()]
    x, y = digits.train.batch(torch.arange(32))
    assert trainer.step(x, y).ok
    moved = any(not torch.equal(a, b) for a, b in zip(before, trainer.G.parameters()))
    assert moved == (weight > 0)
