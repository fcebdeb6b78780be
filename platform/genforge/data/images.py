"""Decoding one image file the way every imagefolder path does: the in-memory loader, the streamed splits and Ray
Data's decode tasks give the same pixels for the same file."""

from __future__ import annotations

from functools import lru_cache
from typing import IO

import torch

from genforge.errors import SpecError


@lru_cache(maxsize=8)
def _transform(size: int):
    import torchvision.transforms.v2 as T

    return T.Compose([T.Resize(size, antialias=True), T.CenterCrop(size), T.PILToTensor()])


def decode_image(source: str | IO[bytes], size: int, channels: int, name: str | None = None) -> torch.Tensor:
    """A file (path or open binary stream) -> uint8 (channels, size, size): shorter side resized to `size`, then
    centre-cropped; SpecError naming the file when it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as img:
            return _transform(size)(img.convert("L" if channels == 1 else "RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise SpecError(f"data.root: unreadable image {name or source}: {exc}") from None
