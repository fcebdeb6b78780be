"""Evaluate a tracked run: load its model and spec, compute every metric under the spec's protocol, log them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from genforge.errors import SpecError
from genforge.evaluator.metrics import Numbers


@dataclass(kw_only=True)
class EvaluationResult(Numbers):
    """What `genforge evaluate` reports (and prints with --json): every number with its protocol, and where."""

    run_id: str
    tracking_uri: str
    report: str  # the report artifact's path in the run

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=float))


def evaluate_run(
    tracking_uri: str, run: str | None = None, model_uri: str | None = None, overrides: list[str] | None = None,
    echo: Callable[[str], None] = print,
) -> EvaluationResult:
    """Evaluate the run `run` (or the run behind `model_uri`) with its spec's `evaluate` section plus
    `overrides` (evaluate.* keys), log metrics, tags and the report artifact to that run."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from genforge.data import load_dataset
    from genforge.evaluator.extractors import get_extractor
    from genforge.evaluator.metrics import evaluate_model
    from genforge.tracking.evaluation_logging import log_evaluation
    from genforge.tracking.loading import current_model_artifact, load_run_model
    from genforge.tracking.lookup import resolve, run_spec
    from genforge.tracking.uri import require_existing_store

    client = MlflowClient(require_existing_store(tracking_uri))
    run_id, artifact = resolve(client, run, model_uri)
    spec = run_spec(client, run_id, overrides or [])
    artifact = artifact or current_model_artifact(client, run_id)  # exactly the weights this evaluation describes
    try:
        model = load_run_model(tracking_uri, run_id, artifact_path=artifact)
    except (MlflowException, OSError):
        raise SpecError(f"--run {run_id}: no genforge_model artifact (the run has not finished training)") from None
    data = load_dataset(spec.data)
    extractor, info = get_extractor(spec.evaluate, data, echo)
    if info.get("path"):  # a trained extractor: record it in MLflow (once per content hash)
        from genforge.tracking.extractor_logging import log_extractor

        meta = json.loads((Path(info["path"]) / "meta.json").read_text())
        info["mlflow_run_id"] = log_extractor(tracking_uri, meta, Path(info["path"]))
    echo(f"[genforge] evaluating run {run_id}: {spec.evaluate.samples} samples x {spec.evaluate.seeds} draws, "
         f"{info['name']} features, against {spec.data.dataset}/{spec.evaluate.reference_split}")
    report = evaluate_model(model, data, spec.evaluate, extractor, info, echo)
    where = log_evaluation(client, run_id, report, artifact)
    return EvaluationResult(run_id=run_id, tracking_uri=tracking_uri, report=str(where), **report.to_dict())
