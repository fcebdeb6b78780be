"""The domain feature extractor: a small CNN classifier trained on the dataset being modelled.

Inception-v3 features need a GPU to be practical (about 6 images/s on 2 CPU cores) and mean little
for 8x8 or 28x28 greyscale digits. A classifier trained on the data itself gives features that
separate what matters in that domain, at thousands of images per second on a CPU; its softmax
gives class probabilities for the Inception-score analogue and for checking conditional samples.
Its penultimate layer (128-d) is the feature space. Numbers are only comparable for the same
weights, so the extractor's content hash is part of every evaluation protocol.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evaluation.extractors.base import batched, inference_batch

FEATURE_DIM = 128


class DomainClassifier(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        c, h, w = image_shape
        self.image_shape, self.num_classes = tuple(image_shape), num_classes

        def block(a: int, b: int) -> list[nn.Module]:
            return [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU()]

        self.trunk = nn.Sequential(
            *block(c, 32),
            *block(32, 32),
            nn.MaxPool2d(2),
            *block(32, 64),
            *block(64, 64),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.embed = nn.Sequential(nn.Linear(64 * (h // 4) * (w // 4), FEATURE_DIM), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(FEATURE_DIM, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to max_shift pixels (zero padded): the only augmentation digits need."""
    n, _, h, w = x.shape
    padded = F.pad(x, [max_shift] * 4)
    rows = torch.randint(0, 2 * max_shift + 1, (n, 1), generator=gen) + torch.arange(h)
    cols = torch.randint(0, 2 * max_shift + 1, (n, 1), generator=gen) + torch.arange(w)
    # Advanced indexing on dims 0, 2, 3 around a slice puts the broadcast dims first: (n, h, w, C).
    out = padded[torch.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def train_domain_classifier(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    *,
    epochs: int = 12,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    log=None,
) -> tuple[DomainClassifier, float]:
    """Train with a fixed seed (deterministic on CPU); returns the eval-mode model and its test accuracy."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DomainClassifier(tuple(train_x.shape[1:]), num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(train_x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    max_shift = max(1, train_x.shape[-1] // 14)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train_x), generator=gen)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(model(_shift(train_x[idx], max_shift, gen)), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if log is not None:
            log(f"domain classifier epoch {epoch + 1}/{epochs} loss {loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        pred = torch.cat(batched(model, test_x, inference_batch("cpu"), torch.device("cpu"))).argmax(1)
    return model, float((pred == test_y).float().mean())


def weights_hash(model: nn.Module) -> str:
    """sha256 over the state dict's names and bytes, in a fixed order."""
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class DomainExtractor:
    name = "domain"

    def __init__(self, model: DomainClassifier, device: str | torch.device = "cpu",
                 batch_size: int | None = None) -> None:
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.batch_size = batch_size or inference_batch(self.device)
        self.content_hash = weights_hash(model)

    def features(self, images: torch.Tensor) -> np.ndarray:
        return torch.cat(batched(self.model.features, images, self.batch_size, self.device)).double().numpy()

    def probs(self, images: torch.Tensor) -> np.ndarray:
        logits = torch.cat(batched(self.model, images, self.batch_size, self.device))
        return torch.softmax(logits.double(), dim=1).numpy()

    def features_and_probs(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        def both(x: torch.Tensor) -> torch.Tensor:
            f = self.model.features(x)
            return torch.cat([f, self.model.head(f)], dim=1)

        out = torch.cat(batched(both, images, self.batch_size, self.device)).double()
        return out[:, :FEATURE_DIM].numpy(), torch.softmax(out[:, FEATURE_DIM:], dim=1).numpy()
