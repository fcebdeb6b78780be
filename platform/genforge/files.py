"""Small files written whole or not at all: a temporary file beside the target, then one rename."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Readers see the old content or the new, never half of it (a unique temp name: writers never collide)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomically(path: str | Path, obj: Any) -> Path:
    return write_text_atomically(path, json.dumps(obj, indent=2, sort_keys=True, default=str))
