"""Logging an evaluation into its run: metrics at the run's training step, protocol as tags, and a
report artifact (JSON with every number, plus figures) under evaluation/<protocol hash>/."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from genforge.images import save_grid
from genforge.tracking.logger import RunLogger

TAG = "genforge.eval."


def training_step(client, run_id: str) -> int:
    history = client.get_metric_history(run_id, "epoch")
    return max((m.step for m in history), default=0)


def log_evaluation(client, run_id: str, report) -> str:
    """Returns the report's artifact path. Metrics go in at the run's last training step; a repeated
    evaluation of the same checkpoint adds no second row (the report artifact has every evaluation)."""
    protocol = report.protocol
    logger = RunLogger(client.tracking_uri, run_id)
    finite = {k: v for k, v in report.metrics.items() if isinstance(v, float) and math.isfinite(v)}
    logger.log_metrics(finite, step=training_step(client, run_id))
    tags = {
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
    }
    for key, value in tags.items():
        client.set_tag(run_id, TAG + key, value)
    artifact_dir = f"evaluation/{protocol['hash']}"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2, default=float))
        for name, (images, nrow) in report.figures.items():
            save_grid(images, nrow, out / f"{name}.png")
        client.log_artifacts(run_id, tmp, artifact_dir)
    return f"runs:/{run_id}/{artifact_dir}"
