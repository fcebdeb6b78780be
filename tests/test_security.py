"""Nothing handed in is unpickled, and no secret lands anywhere genforge writes or prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_spec


class _Payload:
    """Unpickling this object runs `touch MARKER`: the proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_payload_as_a_checkpoint_is_refused(tmp_path):
    from genforge.training import checkpoint

    marker = tmp_path / "pwned"
    ckpt = tmp_path / "checkpoint_step_000000010"
    ckpt.mkdir()
    torch.save({"trainer": _Payload(marker), "rng": []}, ckpt / "state.pt")
    meta = {"state_sha256": checkpoint.sha256_file(ckpt / "state.pt"), "position": {"epoch": 1}}
    (ckpt / "meta.json").write_text(json.dumps(meta))  # a matching hash: only weights_only stands in the way
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|global"):
        checkpoint.load(ckpt)
    assert not marker.exists()


def test_a_pickle_payload_as_a_model_artifact_is_refused(tmp_path):
    """A run whose genforge_model/ holds a pickle where the safetensors weights should be: loading refuses it."""
    import pickle

    from mlflow import MlflowClient

    import genforge
    from genforge.training.checkpoint import sha256_file

    marker = tmp_path / "pwned"
    model = tmp_path / "genforge_model"
    model.mkdir()
    (model / "weights.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    (model / "spec.yaml").write_text(yaml.safe_dump(tiny_spec("evil")))
    manifest = {"format": "genforge-model/1", "modules": ["vae"], "family": "vae", "conditional": False,
                "latent_dim": 8, "num_classes": 10, "image_shape": [1, 8, 8], "value_range": [0.0, 1.0],
                "sha256": {n: sha256_file(model / n) for n in ("weights.safetensors", "spec.yaml")}}
    (model / "manifest.json").write_text(json.dumps(manifest))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    client.log_artifacts(run_id, str(model), "genforge_model")
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do; what matters is that nothing ran
        genforge.load_model(run_id, tracking_uri=uri)
    assert not marker.exists()


@pytest.mark.slow
def test_no_secret_in_anything_written_or_printed(tmp_path):
    """train, register and promote against a basic-auth tracking server whose password is in the URI; then search
    every file written (run directories, checkpoints, the server's store and artifacts, Ray's session logs), every
    param, tag and artifact in MLflow, and every line printed."""
    from mlflow_server import MlflowServer

    secret = "s3cret-Passw0rd-77"
    root = tmp_path / "server"
    root.mkdir()
    server = MlflowServer(root, extra_args=("--app-name", "basic-auth"),
                          env={"MLFLOW_AUTH_ADMIN_PASSWORD": secret, "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
                               "MLFLOW_AUTH_CONFIG_PATH": str(_shipped_auth_config(root))})
    try:
        uri = server.url.replace("http://", f"http://admin:{secret}@")
        work = tmp_path / "work"
        work.mkdir()
        spec = {**tiny_spec("secret-run", epochs=1), "tracking": {"uri": uri}, "register": {"model_name": "secret-m"},
                "stages": ["train", "evaluate", "register", "promote"],
                "evaluate": {"samples": 200, "seeds": 2, "kid_subset_size": 50, "kid_subsets": 5, "iw_samples": 2,
                             "extractor_epochs": 2}}
        spec["train"]["storage_path"] = str(work / "runs")
        user_spec = tmp_path / "spec.yaml"  # the user's own input, the one place the password is allowed
        user_spec.write_text(yaml.safe_dump(spec))
        ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths have a length limit
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS"))}
        env.update(RAY_TMPDIR=ray_tmp, GENFORGE_CACHE=str(work / "cache"))
        # One `genforge run`: train, evaluate, register and promote, each stage talking to the server.
        proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(user_spec), "--json"], cwd=work,
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        run_id = result["run_id"]
        assert result["champion_uri"] and result["registered"], result
        assert secret not in proc.stdout + proc.stderr
        for folder in (work, root, Path(ray_tmp)):
            for path in folder.rglob("*"):
                if path.is_file() and not path.is_symlink():
                    assert secret.encode() not in path.read_bytes(), path
        _assert_tracking_clean(server.url, secret, run_id)
    finally:
        server.stop()


def _shipped_auth_config(root: Path) -> Path:
    """The team server's auth settings as k8s/ ships them, with the user store in a SQLite file under `root`."""
    import configparser

    config = configparser.ConfigParser()
    config.read(Path(__file__).resolve().parents[1] / "k8s" / "base" / "config" / "basic_auth.ini")
    config["mlflow"]["database_uri"] = f"sqlite:///{root / 'basic_auth.db'}"
    path = root / "basic_auth.ini"
    with path.open("w") as f:
        config.write(f)
    return path


def _assert_tracking_clean(url: str, secret: str, run_id: str) -> None:
    from mlflow import MlflowClient

    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = "admin", secret
    try:
        client = MlflowClient(url)
        run = client.get_run(run_id)
        for value in (*run.data.params.values(), *run.data.tags.values()):
            assert secret not in value
        for version in client.search_model_versions("name = 'secret-m'"):
            assert all(secret not in v for v in version.tags.values()) and secret not in (version.source or "")
    finally:
        del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
