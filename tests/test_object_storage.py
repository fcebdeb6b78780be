"""`train.storage_path` on an object store: Ray Train's checkpoints and genforge's own run records, checkpoint
look-ups and clean-up all go through pyarrow's S3 filesystem, against moto's S3-compatible server on loopback
(the real S3 protocol over HTTP; the only stand-in is the server)."""

from __future__ import annotations

import pytest
from conftest import tiny_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3(moto_s3):
    """(storage URI, pyarrow filesystem) of the bucket "genforge" on the session's moto server."""
    options, fs = moto_s3
    fs.create_dir("genforge")
    return f"s3://genforge/runs?{options}", fs


def _files(fs, prefix: str) -> set[str]:
    from pyarrow.fs import FileSelector, FileType

    infos = fs.get_file_info(FileSelector(prefix, recursive=True, allow_not_found=True))
    return {i.path[len(prefix) + 1 :] for i in infos if i.type == FileType.File}


def test_a_run_checkpoints_to_an_object_store_and_resumes_from_it(train_spec, s3, store):
    uri, fs = s3
    spec = tiny_spec("s3-run", epochs=1)
    spec["train"]["storage_path"] = uri
    first = train_spec(spec)
    assert first.status == "FINISHED" and first.checkpoint.startswith("s3://genforge/runs/s3-run/checkpoint_step_")
    files = _files(fs, "genforge/runs/s3-run")
    assert "genforge_run.json" in files
    assert any(f.endswith("/meta.json") for f in files) and any(f.endswith("/state.pt") for f in files)
    assert "endpoint_override" not in first.checkpoint  # connection options are not part of the name

    # An upload cut short: a checkpoint directory with a state and no meta.
    with fs.open_output_stream("genforge/runs/s3-run/checkpoint_step_000000999/state.pt") as f:
        f.write(b"cut short")
    second = train_spec(spec, ("train.epochs=2",))
    assert second.run_id == first.run_id and second.resumed and second.epochs == 2
    assert not any(f.startswith("checkpoint_step_000000999") for f in _files(fs, "genforge/runs/s3-run"))
    assert not (store / "genforge_runs" / "s3-run").exists()  # nothing went to local disk instead
