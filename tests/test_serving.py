"""The registered MLflow model serves: `mlflow models serve` answers a latent batch with images."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_a_latent_batch(family_runs, tracking_uri, tmp_path):
    from genforge.model_registry.promotion import promote
    from genforge.model_registry.versions import register_run

    run = family_runs("vae")
    small = ["evaluate.samples=300", "evaluate.seeds=2", "evaluate.kid_subsets=5", "evaluate.kid_subset_size=50",
             "evaluate.iw_samples=4", "evaluate.extractor_epochs=4"]
    name = "serve-test-vae"
    register_run(tracking_uri, run.run_id, name, small, echo=lambda m: None)
    assert promote(tracking_uri, name).promoted

    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    server = subprocess.Popen(
        [os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", f"models:/{name}@champion", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
    )
    try:
        z = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32).tolist()
        body = json.dumps({"inputs": z}).encode()
        deadline = time.time() + 120
        while True:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                             headers={"Content-Type": "application/json"})
                reply = json.loads(urllib.request.urlopen(req, timeout=30).read())
                break
            except urllib.error.URLError:
                assert server.poll() is None, server.stdout.read().decode()[-3000:]
                assert time.time() < deadline, "server did not come up"
                time.sleep(1)
        images = np.asarray(reply["predictions"])
        assert images.shape == (5, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    finally:
        server.terminate()
        server.wait(30)
