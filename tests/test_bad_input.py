"""Bad input: one line on stderr naming the problem, exit code 2, and nothing created in MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main

GOOD = {"name": "ok", "data": {"dataset": "digits"}, "model": {"family": "vae"}, "train": {"epochs": 1}}


def _write(tmp: Path, spec) -> Path:
    path = tmp / "spec.yaml"
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    return path


def _merge(**sections) -> dict:
    spec = yaml.safe_load(yaml.safe_dump(GOOD))
    for section, values in sections.items():
        if isinstance(values, dict):
            spec.setdefault(section, {}).update(values)
        else:
            spec[section] = values
    return spec


CASES = [
    # (spec or YAML text, extra CLI args, text the message must contain)
    (_merge(modle={"family": "vae"}), [], "unknown key 'modle'"),
    (_merge(model={"latnt_dim": 4}), [], "unknown key 'model.latnt_dim'"),
    (_merge(train={"epochs": 0}), [], "train.epochs"),
    (_merge(train={"lr": -0.1}), [], "train.lr"),
    (_merge(model={"latent_dim": 0}), [], "model.latent_dim"),
    (_merge(model={"beta": -1}), [], "model.beta"),
    (_merge(train={"workers": 0}), [], "train.workers"),
    (_merge(train={"workers": 3, "batch_size": 64}), [], "divisible"),
    (_merge(train={"workers": 4, "batch_size": 2}), [], "batch_size"),
    (_merge(model={"family": "diffusion"}), [], "model.family"),
    (_merge(data={"dataset": "imagenet"}), [], "unknown dataset 'imagenet'"),
    (_merge(data={"dataset": "mnist"}), [], "data.root"),
    (_merge(data={"dataset": "cifar10", "root": "/nonexistent/cifar"}), [], "/nonexistent/cifar"),
    (_merge(model={"diffaugment": "color,rotate"}), [], "rotate"),
    (_merge(name="has spaces"), [], "name"),
    (_merge(train={"batch_size": 4096}), [], "larger than the training split"),
    (_merge(train={"epochs": "many"}), [], "train.epochs"),
    (_merge(train={"storage_path": "s3://bucket/runs?access_key=AK&secret_key=SK"}), [], "train.storage_path"),
    (_merge(train={"storage_path": "nosuchscheme://bucket/runs"}), [], "train.storage_path"),
    ({k: v for k, v in GOOD.items() if k != "name"}, [], "missing required key 'name'"),
    ("name: [unclosed\n", [], "invalid YAML at line"),
    ("- a list\n", [], "a spec is a mapping"),
    (GOOD, ["--set", "train.epochs"], "expected KEY=VALUE"),
    (GOOD, ["--set", "train.epochs=-3"], "train.epochs"),
    (GOOD, ["--set", "model.family.x=1"], "model.family"),
    (GOOD, ["--bogus-flag"], "No such option"),
]


@pytest.mark.parametrize("spec,args,needle", CASES, ids=[c[2][:30] for c in CASES])
def test_bad_spec_one_line_exit_2_nothing_created(spec, args, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = _write(tmp_path, spec)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(path), *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("genforge: error: ") and needle in err, err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "genforge_runs").exists()


def test_missing_spec_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(tmp_path / "nope.yaml")])
    assert exit_info.value.code == 2
    assert "spec file not found" in capsys.readouterr().err


def test_image_folder_errors_name_the_path(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad" / "cats"
    bad.mkdir(parents=True)
    (bad / "broken.png").write_bytes(b"not a png")
    for root, needle in ((empty, str(empty)), (bad.parent, "broken.png")):
        spec = _merge(data={"dataset": "imagefolder", "root": str(root)})
        with pytest.raises(SystemExit) as exit_info:
            main(["train", str(_write(tmp_path, spec))])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_real_process_exit_code_and_single_line(tmp_path):
    """The installed console script, not just main(): no tracebacks or boxed panels."""
    path = _write(tmp_path, _merge(model={"latnt_dim": 4}))
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "train", str(path)], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"genforge: error: {path}: unknown key 'model.latnt_dim'"
    assert not (tmp_path / "mlflow.db").exists()


DEAD_SERVER = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once

UNREACHABLE = [
    ["train", "SPEC"],
    ["run", "SPEC"],
    ["tune", "SPEC"],
    ["models"],
    ["evaluate", "--run", "abc"],
    ["register", "--run", "abc"],
    ["promote", "m"],
    ["rollback", "m"],
    ["generate", "models:/m@champion", "--out", "x.png"],
]


@pytest.mark.parametrize("args", UNREACHABLE, ids=[a[0] for a in UNREACHABLE])
def test_a_tracking_server_that_does_not_answer_is_bad_input(args, tmp_path, monkeypatch, capsys):
    """Exit 2 at once (well within 30 s), one line naming the server, nothing written to disk."""
    import time

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", DEAD_SERVER)
    path = _write(tmp_path, GOOD)
    before = set(tmp_path.iterdir())
    t0 = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        main([str(path) if a == "SPEC" else a for a in args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and time.monotonic() - t0 < 30
    assert (
        err.strip() == f"genforge: error: tracking server {DEAD_SERVER} does not answer ([Errno 111] Connection "
        "refused); start it or fix tracking.uri / MLFLOW_TRACKING_URI"
    ), err
    assert set(tmp_path.iterdir()) == before
