"""Datasets: registry, deterministic disjoint splits, value ranges, image folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from genforge.config import spec_from_dict
from genforge.data import DATASETS, load_dataset


def _cfg(**data):
    return spec_from_dict({"name": "d", "data": data}).data


def test_registry_names():
    assert set(DATASETS) == {"mnist5k", "digits", "mnist", "fashion-mnist", "cifar10", "imagefolder"}


@pytest.mark.parametrize("name,shape,total", [("mnist5k", (1, 28, 28), 5000), ("digits", (1, 8, 8), 1797)])
def test_packaged_datasets(name, shape, total):
    data = load_dataset(_cfg(dataset=name))
    assert data.image_shape == shape and data.num_classes == 10
    assert len(data.train) + len(data.val) + len(data.test) == total
    x, y = data.train.batch(torch.arange(16))
    assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) > 0.9
    assert y.dtype == torch.int64 and set(data.train.labels.tolist()) == set(range(10))


def test_digits_are_scikit_learn_s_without_importing_it():
    """The loader reads scikit-learn's CSV file itself (importing scikit-learn costs every worker 1-2.5 s of CPU);
    load_digits is the reference."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from genforge.data.sources import _digits

    reference, ours = load_digits(), _digits(None)
    assert torch.equal(ours.images, torch.from_numpy((reference.images / 16.0).astype(np.float32)).unsqueeze(1))
    assert torch.equal(ours.labels, torch.from_numpy(reference.target.astype(np.int64)))
    code = ("import sys; from genforge.data.sources import _digits; _digits(None); "
            "print('sklearn' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_split_is_deterministic_and_disjoint():
    a = load_dataset(_cfg(dataset="digits", split_seed=1))
    b = load_dataset(_cfg(dataset="digits", split_seed=1))
    c = load_dataset(_cfg(dataset="digits", split_seed=2))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert (len(a.train), len(a.val), len(a.test)) == (1437, 180, 180)


def test_make_splits_partitions_every_index():
    from genforge.data.splits import RawSource, make_splits

    ids = torch.arange(100, dtype=torch.float32).view(100, 1, 1, 1)
    s = make_splits(
        RawSource("ids", ids, torch.zeros(100, dtype=torch.long), 1), val_fraction=0.1, test_fraction=0.2, seed=0
    )
    parts = [set(split.images.flatten().long().tolist()) for split in (s.train, s.val, s.test)]
    assert [len(p) for p in parts] == [70, 10, 20]
    assert set().union(*parts) == set(range(100)) and sum(map(len, parts)) == 100


def test_image_folder(tmp_path):
    for cls, value in (("dark", 20), ("light", 230)):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(np.full((40, 30, 3), value, dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    data = load_dataset(
        _cfg(dataset="imagefolder", root=str(tmp_path), image_size=16, channels=3, val_fraction=0.2, test_fraction=0.2)
    )
    assert data.image_shape == (3, 16, 16) and data.num_classes == 2
    x, y = data.train.batch(torch.arange(len(data.train)))
    for img, label in zip(x, y):
        assert abs(float(img.mean()) - (20 if label == 0 else 230) / 255) < 0.01
