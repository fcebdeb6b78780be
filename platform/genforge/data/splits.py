"""Deterministic train/val/test splits of in-memory image tensors."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch


@dataclass
class Split:
    images: torch.Tensor  # (N, C, H, W), uint8 in [0, 255] or float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def digest(self, h: "hashlib._Hash") -> None:
        h.update(self.images.contiguous().numpy().tobytes())
        h.update(self.labels.numpy().tobytes())

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as float32 in [0, 1] and their labels."""
        x = self.images[index]
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        return x, self.labels[index]


@dataclass
class RawSource:
    """What a loader returns: all images, and optionally an official test split."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    test_images: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None


@dataclass
class ImageSplits:
    name: str
    train: Split  # or a StreamedSplit (data/streaming.py): the same interface, decoded on demand
    val: Split
    test: Split
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.train.image_shape

    def fingerprint(self) -> str:
        """Content hash of all three splits (the evaluation protocol records it)."""
        h = hashlib.sha256()
        for split in (self.train, self.val, self.test):
            split.digest(h)
        return h.hexdigest()[:16]


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int,
                  official_test: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row numbers of train, val and test: a seeded permutation cut into test (unless the source has an official
    test split), val, and the rest for train."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = 0 if official_test else int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]


def make_splits(src: RawSource, *, val_fraction: float, test_fraction: float, seed: int) -> ImageSplits:
    """Permute with a seeded generator, then cut test (unless official), val, and train."""
    official = src.test_images is not None
    train_idx, val_idx, test_idx = split_indices(int(src.labels.shape[0]), val_fraction, test_fraction, seed, official)
    test = Split(src.test_images, src.test_labels) if official else Split(src.images[test_idx], src.labels[test_idx])
    return ImageSplits(
        name=src.name,
        train=Split(src.images[train_idx], src.labels[train_idx]),
        val=Split(src.images[val_idx], src.labels[val_idx]),
        test=test,
        num_classes=src.num_classes,
    )
