"""Loading a run's platform model artifact from MLflow (downloaded, sha256-verified, no unpickling)."""

from __future__ import annotations

import tempfile

import torch

from genforge import artifacts
from genforge.tracking.model_logging import PLATFORM_ARTIFACT_PATH


def load_run_model(tracking_uri: str, run_id: str, device: str | torch.device = "cpu") -> artifacts.LoadedModel:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=PLATFORM_ARTIFACT_PATH, dst_path=tmp, tracking_uri=tracking_uri
        )
        return artifacts.load(local, device=device)
