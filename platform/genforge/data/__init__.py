"""Dataset registry: a name maps to a loader that returns train/val/test tensors in memory.

Images are kept as uint8 (or float in [0, 1] for sources that are not 8-bit) and scaled per batch,
so a 50k-image CIFAR-10 costs 150 MB per worker instead of 600 MB.
"""

from __future__ import annotations

from genforge.data.sources import LOADERS, load_source
from genforge.data.splits import ImageSplits, Split, make_splits
from genforge.errors import SpecError

__all__ = ["DATASETS", "ImageSplits", "Split", "load_dataset"]

DATASETS: tuple[str, ...] = tuple(LOADERS)


def load_dataset(cfg: "DataConfig") -> ImageSplits:  # noqa: F821 - config imported lazily
    """Load `cfg.dataset` and split it deterministically from `cfg.split_seed`.

    Raises SpecError naming the key or path when the dataset cannot be read.
    """
    if getattr(cfg, "streaming", False):
        from genforge.data.streaming import streamed_splits

        _require_streamable(cfg)
        return streamed_splits(cfg)
    source = load_source(cfg)
    return make_splits(source, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.split_seed)


def _require_streamable(cfg) -> None:
    if not cfg.root:
        raise SpecError("data.root: data.streaming needs data.root (a directory or a URI such as s3://bucket/images)")
