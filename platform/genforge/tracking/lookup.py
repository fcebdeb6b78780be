"""Finding things in MLflow: the run behind a model URI, a run's resolved spec, a run's platform model.

`evaluate`, `register`, `generate` and `load_model` all start from a run id or a model URI; this is the
one place that turns either into a run, and a missing run or model into a one-line SpecError.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from genforge.config import Spec, spec_from_dict
from genforge.errors import SpecError

MODEL_URI_FORMS = "runs:/RUN_ID/PATH, models:/NAME@ALIAS, models:/NAME/VERSION or models:/m-ID"


def resolve_model(client, model_uri: str) -> tuple[str | None, str | None]:
    """(source run, platform artifact path or None for the run's current one) of runs:/RUN/...,
    models:/NAME@ALIAS, models:/NAME/VERSION or models:/m-ID. A registered version names the exact weights it
    was registered with (its `model_artifact` tag), so it never serves weights a later extension logged."""
    if model_uri.startswith("runs:/"):
        return model_uri[len("runs:/") :].split("/", 1)[0], None
    if not model_uri.startswith("models:/"):
        raise SpecError(f"--model {model_uri}: expected {MODEL_URI_FORMS}")
    ref = model_uri[len("models:/") :].strip("/")
    if "@" in ref or "/" in ref:
        name, sep, which = ref.partition("@") if "@" in ref else ref.partition("/")
        version = (
            client.get_model_version_by_alias(name, which) if sep == "@" else client.get_model_version(name, which)
        )
        return version.run_id, version.tags.get("model_artifact")
    return client.get_logged_model(ref).source_run_id, None


def resolve_run(client, run: str | None, model_uri: str | None = None) -> str:
    """A run id from a run id or from a model URI; SpecError when either does not exist."""
    return resolve(client, run, model_uri)[0]


def resolve(client, run: str | None, model_uri: str | None = None) -> tuple[str, str | None]:
    """(run id, platform artifact path or None) from a run id or a model URI; SpecError when either does not
    exist."""
    from mlflow.exceptions import MlflowException

    artifact = None
    if model_uri:
        try:
            run, artifact = resolve_model(client, model_uri)
        except MlflowException as exc:
            raise SpecError(f"--model {model_uri}: cannot resolve it ({str(exc).splitlines()[0]})") from None
        if not run:
            raise SpecError(f"--model {model_uri}: the model has no source run")
    try:
        client.get_run(run)
    except MlflowException:
        raise SpecError(f"--run {run}: no such run in {client.tracking_uri}") from None
    return run, artifact


def run_spec(client, run_id: str, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """The resolved spec a run was trained with (its spec.yaml artifact), with overrides applied."""
    import yaml
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "spec.yaml", tmp)
        except (MlflowException, OSError):
            raise SpecError(f"--run {run_id}: the run has no spec.yaml; was it trained by genforge?") from None
        return spec_from_dict(yaml.safe_load(Path(path).read_text()), overrides, source=f"run {run_id} spec")
