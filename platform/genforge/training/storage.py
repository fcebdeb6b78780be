"""Where run directories live: a local (or mounted) path, or any URI pyarrow opens (s3://, gs://, hdfs://, ...).

Ray Train writes checkpoints through a pyarrow filesystem; genforge's own reads and writes of a run directory
(the run record, finding the newest complete checkpoint, removing partial ones, moving an orphaned directory
aside) go through the same filesystem, so `train.storage_path: s3://bucket/genforge` works end to end and a
re-submitted job on another node finds the checkpoints it must resume from. A URI may carry pyarrow's options
as a query (`s3://bucket/runs?endpoint_override=minio:9000&scheme=http`); credentials come from the
environment of each process (AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, ...), never from the URI.

Reading a checkpoint from an object store downloads it to a local temporary folder first (`materialize`): it is
verified (sha256) and loaded there exactly as a local one.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from genforge.errors import SpecError


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location)


@dataclass(frozen=True)
class Location:
    """A directory or file on a filesystem: `uri` as genforge prints and passes it (workers re-open it), `fs` and
    `path` as pyarrow addresses it."""

    uri: str
    fs: Any
    path: str

    @classmethod
    def parse(cls, location: str | os.PathLike | "Location") -> "Location":
        if isinstance(location, Location):
            return location
        text = str(location)
        if not is_uri(text):
            from pyarrow.fs import LocalFileSystem

            local = str(Path(text).expanduser().resolve())
            return cls(local, LocalFileSystem(), local)
        from pyarrow.fs import FileSystem

        try:
            fs, path = FileSystem.from_uri(text)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid/OSError/... for a URI it cannot open
            raise SpecError(f"train.storage_path: {_without_query(text)}: {' '.join(str(exc).split())[:200]}") from None
        return cls(text, fs, path.rstrip("/"))

    @property
    def is_local(self) -> bool:
        return not is_uri(self.uri)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def __truediv__(self, name: str) -> "Location":
        if self.is_local:
            return Location(str(Path(self.uri) / name), self.fs, posixpath.join(self.path, name))
        parts = urlsplit(self.uri)
        uri = urlunsplit((parts.scheme, parts.netloc, posixpath.join(parts.path, name), parts.query, ""))
        return Location(uri, self.fs, posixpath.join(self.path, name))

    def __str__(self) -> str:
        return _without_query(self.uri)

    def _info(self) -> Any:
        return self.fs.get_file_info(self.path)

    def is_dir(self) -> bool:
        from pyarrow.fs import FileType

        return self._info().type == FileType.Directory

    def is_file(self) -> bool:
        from pyarrow.fs import FileType

        return self._info().type == FileType.File

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_text(self, text: str) -> None:
        """Whole or not at all: a local file through a temporary name and a rename; an object store's PUT
        is atomic on its own."""
        if self.is_local:
            from genforge.files import write_text_atomically

            write_text_atomically(Path(self.path), text)
            return
        with self.fs.open_output_stream(self.path) as f:
            f.write(text.encode())

    def children(self, prefix: str = "") -> list["Location"]:
        """Entries directly inside this directory whose names start with `prefix`, sorted by name."""
        from pyarrow.fs import FileSelector

        if not self.is_dir():
            return []
        infos = self.fs.get_file_info(FileSelector(self.path, allow_not_found=True))
        names = sorted(posixpath.basename(i.path.rstrip("/")) for i in infos)
        return [self / n for n in names if n.startswith(prefix)]

    def remove_tree(self) -> None:
        self.fs.delete_dir(self.path)

    def move_to(self, target: "Location") -> None:
        """Rename (local) or copy then delete (object stores have no rename of a prefix)."""
        if self.is_local:
            os.replace(self.path, target.path)
            return
        from pyarrow.fs import copy_files

        copy_files(self.path, target.path, source_filesystem=self.fs, destination_filesystem=target.fs)
        self.remove_tree()

    def materialize(self) -> Path:
        """A local directory with this directory's files: itself when local, else a fresh download."""
        if self.is_local:
            return Path(self.path)
        from pyarrow.fs import LocalFileSystem, copy_files

        local = Path(tempfile.mkdtemp(prefix=f"genforge-{self.name}-"))
        copy_files(self.path, str(local), source_filesystem=self.fs, destination_filesystem=LocalFileSystem())
        return local

    def ray_storage(self) -> tuple[str, Any]:
        """(storage_path, storage_filesystem) for Ray Train's RunConfig."""
        return (self.path, None) if self.is_local else (self.path, self.fs)


def _without_query(uri: str) -> str:
    """A URI as printed: pyarrow's options (endpoint, scheme) are connection details, not part of the name."""
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")) if parts.scheme else uri
