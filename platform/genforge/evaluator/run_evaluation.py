"""`genforge evaluate`: load a run's model and spec, evaluate under the spec's protocol, log to MLflow."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable

from genforge.config import Spec, spec_from_dict
from genforge.errors import SpecError


def run_of_model(client, model_uri: str) -> str | None:
    """The source run of runs:/RUN/..., models:/m-ID (a logged model), models:/NAME@ALIAS or models:/NAME/VERSION."""
    if model_uri.startswith("runs:/"):
        return model_uri[len("runs:/") :].split("/", 1)[0]
    if not model_uri.startswith("models:/"):
        raise SpecError(f"--model {model_uri}: expected runs:/RUN_ID/PATH or models:/NAME@ALIAS, models:/NAME/VERSION, models:/m-ID")
    ref = model_uri[len("models:/") :].strip("/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return client.get_model_version_by_alias(name, alias).run_id
    if "/" in ref:
        name, version = ref.split("/", 1)
        return client.get_model_version(name, version).run_id
    return client.get_logged_model(ref).source_run_id


def resolve_run(client, run: str | None, model_uri: str | None) -> str:
    """A run id from --run or from a model URI."""
    from mlflow.exceptions import MlflowException

    if model_uri:
        try:
            run = run_of_model(client, model_uri)
        except MlflowException as exc:
            raise SpecError(f"--model {model_uri}: cannot resolve it ({str(exc).splitlines()[0]})") from None
        if not run:
            raise SpecError(f"--model {model_uri}: the model has no source run to evaluate")
    try:
        client.get_run(run)
    except MlflowException:
        raise SpecError(f"--run {run}: no such run in {client.tracking_uri}") from None
    return run


def run_spec(client, run_id: str, overrides: list[str]) -> Spec:
    import yaml
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "spec.yaml", tmp)
        except (MlflowException, OSError):
            raise SpecError(f"--run {run_id}: the run has no spec.yaml; was it trained by genforge?") from None
        return spec_from_dict(yaml.safe_load(Path(path).read_text()), overrides, source=f"run {run_id} spec")


def evaluate_run(
    tracking_uri: str, run: str | None = None, model_uri: str | None = None, overrides: list[str] | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from genforge.data import load_dataset
    from genforge.evaluator.extractors import get_extractor
    from genforge.evaluator.metrics import evaluate_model
    from genforge.tracking.evaluation_logging import log_evaluation
    from genforge.tracking.loading import load_run_model

    from genforge.tracking.uri import require_existing_store

    client = MlflowClient(require_existing_store(tracking_uri))
    run_id = resolve_run(client, run, model_uri)
    spec = run_spec(client, run_id, overrides or [])
    try:
        model = load_run_model(tracking_uri, run_id)
    except (MlflowException, OSError):
        raise SpecError(f"--run {run_id}: no genforge_model artifact (the run has not finished training)") from None
    data = load_dataset(spec.data)
    extractor, info = get_extractor(spec.evaluate, data, echo)
    if info["name"] == "domain":  # record the extractor itself (once per content hash)
        from genforge.tracking.extractor_logging import log_extractor

        meta = json.loads((Path(info["path"]) / "meta.json").read_text())
        info["mlflow_run_id"] = log_extractor(tracking_uri, meta, Path(info["path"]))
    echo(f"[genforge] evaluating run {run_id}: {spec.evaluate.samples} samples x {spec.evaluate.seeds} draws, "
         f"{info['name']} features, against {spec.data.dataset}/{spec.evaluate.reference_split}")
    report = evaluate_model(model, data, spec.evaluate, extractor, info, echo)
    where = log_evaluation(client, run_id, report)
    result = {"run_id": run_id, "tracking_uri": tracking_uri, "report": where, **report.to_dict()}
    return json.loads(json.dumps(result, default=float))
