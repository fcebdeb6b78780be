"""Logging the final model twice over: the platform artifact and an MLflow pt2 model of the sampler.

The MLflow model is the sampler (G_ema or the VAE decoder) in eval mode, exported with torch.export
(MLflow 3's default `pt2` format). Its signature marks the batch dimension dynamic (-1) and the input
example has batch 2: with batch 1 torch.export specialises the batch size and the loaded model
refuses any other. The facts a consumer needs (latent_dim, num_classes, image_shape, value_range)
travel as model metadata, since the loaded graph module carries none of them.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genforge import artifacts

PLATFORM_ARTIFACT_PATH = "genforge_model"
MODEL_ARTIFACT_TAG = "genforge.model_artifact"  # the run's current platform artifact (the latest finalisation)
MLFLOW_MODEL_NAME = "sampler"


class _Unconditional(nn.Module):
    """Fixes the call signature torch.export sees to (z): no optional arguments."""

    def __init__(self, sampler: nn.Module) -> None:
        super().__init__()
        self.sampler = sampler

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.sampler(z)


class _Conditional(_Unconditional):
    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.sampler(z, y)


def platform_artifact_path(step: int) -> str:
    """Where the weights of training step `step` live in the run: one folder per finalisation, never overwritten,
    so a registered version and an evaluation always point at exactly the weights they describe."""
    return f"{PLATFORM_ARTIFACT_PATH}/step_{step:09d}"


def log_platform_model(client, run_id: str, spec, modules: dict[str, nn.Module], facts: dict[str, Any],
                       step: int) -> str:
    """Log the platform artifact of step `step` and make it the run's current model; returns its artifact path."""
    path = platform_artifact_path(step)
    with tempfile.TemporaryDirectory() as tmp:
        directory = artifacts.save(Path(tmp) / "model", spec, modules, facts)
        client.log_artifacts(run_id, str(directory), path)
    client.set_tag(run_id, MODEL_ARTIFACT_TAG, path)
    return path


def log_mlflow_sampler(sampler: nn.Module, facts: dict[str, Any]) -> str:
    """Log into the active MLflow run; returns the model URI."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    conditional = bool(facts["conditional"])
    model = (_Conditional if conditional else _Unconditional)(sampler.eval().cpu()).eval()
    c, h, w = facts["image_shape"]
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, facts["latent_dim"])).astype(np.float32)
    example: Any = z
    if conditional:
        inputs = [
            TensorSpec(np.dtype(np.float32), (-1, facts["latent_dim"]), "z"),
            TensorSpec(np.dtype(np.int64), (-1,), "y"),
        ]
        example = (z, np.array([0, 1], dtype=np.int64))
    else:
        # One unnamed tensor: the pyfunc flavor (and `mlflow models serve`) then hands the model a plain
        # array, which the PyTorch flavor accepts; a named input would arrive as a dict, which it refuses.
        inputs = [TensorSpec(np.dtype(np.float32), (-1, facts["latent_dim"]))]
    signature = ModelSignature(
        inputs=Schema(inputs), outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, c, h, w), "images")])
    )
    # MLflow tries the input example against pyfunc serving, which the pytorch flavor cannot do for
    # tensor inputs; it only warns, loudly. The pt2 model itself is checked by our tests.
    logging.getLogger("mlflow.models.model").setLevel(logging.ERROR)
    info = mlflow.pytorch.log_model(
        model,
        name=MLFLOW_MODEL_NAME,
        input_example=example,
        signature=signature,
        metadata=facts,
        serialization_format="pt2",
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
    )
    return info.model_uri
