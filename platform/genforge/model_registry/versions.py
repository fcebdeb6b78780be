"""Register evaluated runs as model versions whose tags carry the metrics and the protocol."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from genforge.errors import SpecError

EVAL = "genforge.eval."


@dataclass
class RegisteredVersion:
    """One model version as `genforge register` and `genforge models` report it."""

    name: str
    version: int
    run_id: str
    uri: str
    aliases: list[str] = field(default_factory=list)
    fid: str | None = None
    fid_std: str | None = None
    protocol: str | None = None
    protocol_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def version_summary(v) -> RegisteredVersion:
    return RegisteredVersion(
        name=v.name,
        version=int(v.version),
        run_id=v.run_id,
        uri=f"models:/{v.name}/{v.version}",
        aliases=list(getattr(v, "aliases", []) or []),
        fid=v.tags.get("fid"),
        fid_std=v.tags.get("fid_std"),
        protocol=v.tags.get("protocol_name"),
        protocol_hash=v.tags.get("protocol_hash"),
    )


def register_run(tracking_uri: str, run_id: str, name: str | None = None, overrides: list[str] | None = None,
                 echo: Callable[[str], None] = print) -> RegisteredVersion:
    """Evaluate the run first if it has no evaluation, then register its MLflow model. Registering the
    same run under the same name again returns the existing version."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from genforge.evaluator.run_evaluation import evaluate_run
    from genforge.tracking.lookup import resolve_run, run_spec

    client = MlflowClient(tracking_uri)
    run_id = resolve_run(client, run_id, None)
    spec = run_spec(client, run_id, overrides or [])
    name = name or spec.model_name
    run = client.get_run(run_id)
    model_uri = run.data.tags.get("genforge.model_uri")
    if not model_uri:
        raise SpecError(f"--run {run_id}: the run has no logged model (training unfinished, or a trial that did not win)")
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if existing:
        v = max(existing, key=lambda mv: int(mv.version))
        echo(f"[genforge] run {run_id} is already {name} version {v.version}")
        return version_summary(client.get_model_version(name, v.version))
    if EVAL + "protocol_hash" not in run.data.tags:
        echo(f"[genforge] run {run_id} has no evaluation yet: evaluating first")
        evaluate_run(tracking_uri, run_id, overrides=overrides, echo=echo)
        run = client.get_run(run_id)
    t = run.data.tags
    tags = {
        "fid": t[EVAL + "fid"],
        "fid_std": t[EVAL + "fid_std"],
        "protocol_hash": t[EVAL + "protocol_hash"],
        "protocol_name": t[EVAL + "protocol_name"],
        "dataset": t["genforge.dataset"],
        "family": t["genforge.family"],
        "spec_hash": t["genforge.spec_fingerprint"],
        "git_commit": t.get("mlflow.source.git.commit", "unknown"),
        "run_id": run_id,
    }
    for key in ("kid", "precision", "recall", "density", "coverage", "is"):
        if key in run.data.metrics:
            tags[key] = repr(run.data.metrics[key])
    try:
        client.create_registered_model(name, tags={"genforge.dataset": tags["dataset"], "genforge.family": tags["family"]})
    except MlflowException:
        pass  # exists
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        v = mlflow.register_model(model_uri, name, tags=tags)
    finally:
        mlflow.set_tracking_uri(previous)
    echo(f"[genforge] registered {name} version {v.version} (fid {float(tags['fid']):.4f} +- {float(tags['fid_std']):.4f})")
    return version_summary(client.get_model_version(name, v.version))


def list_models(tracking_uri: str, name: str | None = None) -> list[RegisteredVersion]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    names = [name] if name else [m.name for m in client.search_registered_models()]
    out = []
    for n in names:
        versions = client.search_model_versions(f"name = '{n}'")
        out.extend(version_summary(client.get_model_version(n, v.version)) for v in sorted(versions, key=lambda v: int(v.version)))
    return out
