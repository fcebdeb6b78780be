"""Image folders too large to decode whole: listed once, split by index, decoded on demand.

With `data.streaming: true` nobody holds the decoded folder. The train split reaches the ranks as a Ray Data
dataset (`train_dataset`, read per rank with `ray.train.get_dataset_shard`); the held-out splits and the few
images a driver needs (the preflight pass, grids, reference features) are `StreamedSplit`s that decode the files
they are asked for. The split membership is the in-memory path's (`split_indices` over the same sorted listing),
so switching a run to streaming changes where pixels are decoded, not which images train.

The folder is read through pyarrow's filesystem layer, so `data.root` may be a local or mounted path or an
object-store URI (`s3://bucket/images?endpoint_override=...`), like `train.storage_path`.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from genforge.data.images import decode_image
from genforge.data.splits import ImageSplits, split_indices
from genforge.errors import SpecError

# torchvision.datasets.folder.IMG_EXTENSIONS: what ImageFolder, and so the in-memory path, accepts.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class FolderIndex:
    """One sub-folder per class, as torchvision's ImageFolder: sorted class names, files sorted within them."""

    root: str  # the path inside `fs`
    fs: Any  # pyarrow.fs.FileSystem
    paths: tuple[str, ...]
    labels: np.ndarray  # int64, one per path
    sizes: np.ndarray  # bytes per file: part of the fingerprint without reading every file
    classes: tuple[str, ...]


def index_folder(root: str) -> FolderIndex:
    """List `root` (a path or a URI) without decoding anything; SpecError naming the root when it holds no images."""
    from pyarrow import fs as pafs

    try:
        filesystem, base = pafs.FileSystem.from_uri(root) if "://" in root else (pafs.LocalFileSystem(), root)
        infos = filesystem.get_file_info(pafs.FileSelector(base.rstrip("/"), recursive=True))
    except (OSError, ValueError) as exc:
        raise SpecError(f"data.root: cannot list {root}: {exc}") from None
    base = base.rstrip("/")
    files = sorted(
        (info.path, info.size) for info in infos
        if info.type == pafs.FileType.File and info.path.lower().endswith(IMAGE_EXTENSIONS)
        and "/" in info.path[len(base) + 1:]  # inside a class folder, as ImageFolder requires
    )
    if not files:
        raise SpecError(f"data.root: no images in class sub-folders of {root}")
    class_of = [path[len(base) + 1:].split("/", 1)[0] for path, _ in files]
    classes = tuple(sorted(set(class_of)))
    number = {name: i for i, name in enumerate(classes)}
    return FolderIndex(
        base, filesystem, tuple(p for p, _ in files), np.array([number[c] for c in class_of], dtype=np.int64),
        np.array([s for _, s in files], dtype=np.int64), classes,
    )


class StreamedSplit:
    """A split of an indexed folder whose images are decoded when asked for (`Split`'s interface)."""

    def __init__(self, index: FolderIndex, rows: np.ndarray, size: int, channels: int) -> None:
        self.index, self.rows, self.size, self.channels = index, rows, size, channels
        self.labels = torch.from_numpy(index.labels[rows])

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.channels, self.size, self.size

    def paths(self) -> list[str]:
        return [self.index.paths[i] for i in self.rows]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as float32 in [0, 1] and their labels; decodes only these files."""
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        images = torch.empty((len(index), self.channels, self.size, self.size), dtype=torch.uint8)
        for out, i in enumerate(index.tolist()):
            path = self.index.paths[self.rows[i]]
            with self.index.fs.open_input_file(path) as handle:
                images[out] = decode_image(io.BytesIO(handle.read()), self.size, self.channels, path)
        return images.float().div_(255.0), self.labels[index]

    def digest(self, h: "hashlib._Hash") -> None:
        """File names, byte sizes and labels: reading 200,000 files to hash their pixels is what streaming avoids."""
        for i in self.rows:
            h.update(self.index.paths[i][len(self.index.root):].encode())
        h.update(self.index.sizes[self.rows].tobytes())
        h.update(self.index.labels[self.rows].tobytes())


def streamed_splits(cfg) -> ImageSplits:
    """The imagefolder `cfg.root` as three StreamedSplits, split as the in-memory path splits it."""
    index = index_folder(cfg.root)
    size, channels = cfg.image_size or 64, cfg.channels or 3
    train, val, test = split_indices(len(index.paths), cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
    splits = (StreamedSplit(index, rows.numpy(), size, channels) for rows in (train, val, test))
    return ImageSplits("imagefolder", *splits, num_classes=len(index.classes))


def train_dataset(cfg, seed: int, task_cpus: float = 1.0) -> Any:
    """The train split as a Ray Data dataset of {"image": uint8 (C, H, W), "label": int64} rows.

    Files are read by Ray Data's tasks (from any pyarrow filesystem) and decoded in them, so a rank holds only
    the batches in flight. The file order is the split's seeded permutation and Ray Data shuffles block order
    from `seed`; each rank adds a local shuffle re-seeded every epoch (training/worker.py). `task_cpus` is what
    each read and decode task reserves (`data_task_cpus`)."""
    import ray.data

    split = streamed_splits(cfg).train
    decode = _Decoder(split.index.root, split.index.classes, split.size, split.channels)
    ds = ray.data.read_binary_files(split.paths(), include_paths=True, filesystem=split.index.fs,
                                    num_cpus=task_cpus)
    return ds.randomize_block_order(seed=seed).map_batches(decode, batch_size=64, batch_format="numpy",
                                                          num_cpus=task_cpus)


def data_task_cpus(cluster_cpus: float, train_cpus: float) -> float:
    """CPUs each Ray Data task reserves: 1 where the training workers leave a CPU free; 0 where they take them all
    (a laptop with as many workers as cores). Ray Train hands its workers' CPUs to Ray Data as excluded resources,
    so with none left over every read task would wait for a CPU forever; unreserved, the decoding shares the
    workers' cores instead (Ray Data's budget still caps how much runs at once)."""
    return 1.0 if cluster_cpus - train_cpus >= 1.0 else 0.0


class _Decoder:
    """Ray Data map: file bytes -> the decoded image and its label (the in-memory path's pixels exactly). The label
    is read off the class folder in the path, so each task carries the class names, not a table of every file."""

    def __init__(self, root: str, classes: tuple[str, ...], size: int, channels: int) -> None:
        self.root, self.size, self.channels = root, size, channels
        self.number = {name: i for i, name in enumerate(classes)}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = np.stack([
            decode_image(io.BytesIO(data), self.size, self.channels, path).numpy()
            for data, path in zip(batch["bytes"], batch["path"])
        ])
        labels = np.array([self.number[self._class(p)] for p in batch["path"]], dtype=np.int64)
        return {"image": images, "label": labels}

    def _class(self, path: str) -> str:
        path = path.split("://", 1)[1] if "://" in path else path  # Ray Data may report the path with its scheme
        return path[len(self.root) + 1:].split("/", 1)[0]
