"""Logging an evaluation into its run: metrics at the training step of the evaluated weights, protocol and
weights as tags, and a report artifact (JSON with every number, plus figures) under
evaluation/<protocol hash>/<weights>/.

An evaluation describes exactly one set of weights (the run's platform artifact of one training step) under one
protocol. Re-evaluating the same weights under the same protocol adds no metric rows; a new protocol, or new
weights after a run was extended, logs its numbers and takes over the run's `genforge.eval.*` tags, so the tags
and the run's latest metric values always come from the same evaluation.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from genforge.images import save_grid
from genforge.tracking.model_logging import MODEL_ARTIFACT_TAG, PLATFORM_ARTIFACT_PATH

TAG = "genforge.eval."


def training_step(client, run_id: str) -> int:
    history = client.get_metric_history(run_id, "epoch")
    return max((m.step for m in history), default=0)


def _step_of(artifact: str, client, run_id: str) -> int:
    """The training step a platform artifact holds (`genforge_model/step_000000120`), else the run's last."""
    leaf = artifact.rsplit("/", 1)[-1]
    return int(leaf[len("step_"):]) if leaf.startswith("step_") else training_step(client, run_id)


def current_evaluation(run) -> dict[str, str] | None:
    """The run's evaluation tags if they describe the run's current weights, else None (never evaluated, or the
    run was extended after its evaluation)."""
    tags = run.data.tags
    current = tags.get(MODEL_ARTIFACT_TAG, PLATFORM_ARTIFACT_PATH)
    if TAG + "protocol_hash" not in tags or tags.get(TAG + "model_artifact", PLATFORM_ARTIFACT_PATH) != current:
        return None
    return {k[len(TAG):]: v for k, v in tags.items() if k.startswith(TAG)}


def _log_metrics(client, run_id: str, report, model_artifact: str) -> None:
    """The report's finite metrics at the weights' training step. If this very evaluation is already there, only the
    metrics the run lacks (ones genforge measures since that evaluation, e.g. the floor): never a second row."""
    from mlflow.entities import Metric

    run = client.get_run(run_id)
    tags = run.data.tags
    same = (tags.get(TAG + "protocol_hash") == report.protocol["hash"]
            and tags.get(TAG + "model_artifact") == model_artifact)
    step = _step_of(model_artifact, client, run_id)
    import time

    now = int(time.time() * 1000)
    rows = [Metric(k, v, now, step) for k, v in report.metrics.items() if isinstance(v, float) and math.isfinite(v)
            and not (same and k in run.data.metrics)]
    for i in range(0, len(rows), 500):
        client.log_batch(run_id, metrics=rows[i : i + 500])


def log_evaluation(client, run_id: str, report, model_artifact: str) -> str:
    """Log one evaluation of the weights at `model_artifact`; returns the report's artifact path."""
    protocol = report.protocol
    _log_metrics(client, run_id, report, model_artifact)
    artifact_dir = f"evaluation/{protocol['hash']}/{model_artifact.rsplit('/', 1)[-1]}"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "report.json").write_text(json.dumps({**report.to_dict(), "model_artifact": model_artifact},
                                                    indent=2, default=float))
        for name, (images, nrow) in report.figures.items():
            save_grid(images, nrow, out / f"{name}.png")
        client.log_artifacts(run_id, tmp, artifact_dir)
    tags: dict[str, Any] = {
        "protocol_hash": protocol["hash"],
        "protocol_name": protocol["name"],
        "dataset": protocol["dataset"],
        "dataset_fingerprint": protocol["dataset_fingerprint"],
        "split": protocol["split"],
        "samples": str(protocol["samples"]),
        "seeds": ",".join(map(str, protocol["seeds"])),
        "extractor": protocol["extractor"],
        "extractor_hash": protocol["extractor_hash"],
        "fid": repr(report.metrics["fid"]),
        "fid_std": repr(report.metrics["fid_std"]),
        "model_artifact": model_artifact,
        "report": artifact_dir,  # written last: the tags name a report that exists
    }
    for key, value in tags.items():
        client.set_tag(run_id, TAG + key, str(value))
    return f"runs:/{run_id}/{artifact_dir}"
