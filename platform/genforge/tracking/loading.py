"""Loading a run's platform model artifact from MLflow (downloaded, sha256-verified, no unpickling)."""

from __future__ import annotations

import tempfile

import torch

from genforge import artifacts
from genforge.tracking.model_logging import MODEL_ARTIFACT_TAG, PLATFORM_ARTIFACT_PATH


def current_model_artifact(client, run_id: str) -> str:
    """The run's current platform artifact path (runs finalised before per-step artifacts: the bare folder)."""
    return client.get_run(run_id).data.tags.get(MODEL_ARTIFACT_TAG, PLATFORM_ARTIFACT_PATH)


def load_run_model(tracking_uri: str, run_id: str, device: str | torch.device = "cpu",
                   artifact_path: str | None = None) -> artifacts.LoadedModel:
    """The platform model at `artifact_path` of the run (default: the run's current one)."""
    import mlflow
    from mlflow import MlflowClient

    path = artifact_path or current_model_artifact(MlflowClient(tracking_uri), run_id)
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp,
                                                    tracking_uri=tracking_uri)
        return artifacts.load(local, device=device)
