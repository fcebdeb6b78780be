"""Rank-0 metric and artifact logging into an existing MLflow run, never logging a step twice.

MLflow never deduplicates metrics: a step logged again after a restart adds a second row. The
logger reads, per key, the highest step already in the run (its watermark) when it starts, and
drops any row at or below it. A restart that replays steps since its checkpoint therefore adds
nothing for steps that were logged before the interruption, and fills in those that were not.
"""

from __future__ import annotations

import time
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric


class RunLogger:
    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.client, self.run_id = MlflowClient(tracking_uri), run_id
        self.watermarks = self._read_watermarks()

    def _read_watermarks(self) -> dict[str, int]:
        run = self.client.get_run(self.run_id)
        marks = {}
        for key in run.data.metrics:
            history = self.client.get_metric_history(self.run_id, key)
            marks[key] = max((m.step for m in history), default=-1)
        return marks

    def log_metrics(self, metrics: dict[str, float], step: int) -> int:
        """Log the rows above each key's watermark; returns how many were written."""
        now = int(time.time() * 1000)
        rows = [Metric(k, float(v), now, step) for k, v in metrics.items() if step > self.watermarks.get(k, -1)]
        if rows:
            self.client.log_batch(self.run_id, metrics=rows)
            for row in rows:
                self.watermarks[row.key] = step
        return len(rows)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)
