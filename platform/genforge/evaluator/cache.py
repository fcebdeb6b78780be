"""The on-disk cache of trained extractors and reference statistics (GENFORGE_CACHE, ~/.cache/genforge)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("GENFORGE_CACHE", "~/.cache/genforge")).expanduser().resolve()


def publish_dir(tmp: Path, final: Path) -> Path:
    """Move a fully written directory into place in one rename: readers never see half of it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, final)
    except OSError:  # another process published it first; theirs is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def staging_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
