"""Register evaluated runs as model versions whose tags carry the metrics and the protocol."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from genforge.errors import SpecError
from genforge.model_registry.store import registry_call

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
    model_artifact: str | None = None  # the platform artifact (weights of one training step) the version serves

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
        model_artifact=v.tags.get("model_artifact"),
    )


def register_run(tracking_uri: str, run_id: str, name: str | None = None, overrides: list[str] | None = None,
                 echo: Callable[[str], None] = print) -> RegisteredVersion:
    """Evaluate the run's current weights first if they have no evaluation, then register its MLflow model.
    Registering the same weights under the same name again returns the existing version; a run extended since
    its last registration gets a new version for its new weights."""
    import mlflow
    from mlflow import MlflowClient

    from genforge.evaluator.run_evaluation import evaluate_run
    from genforge.tracking.evaluation_logging import current_evaluation
    from genforge.tracking.loading import current_model_artifact
    from genforge.tracking.lookup import resolve_run, run_spec

    client = MlflowClient(tracking_uri)
    run_id = resolve_run(client, run_id, None)
    spec = run_spec(client, run_id, overrides or [])
    name = name or spec.model_name
    run = client.get_run(run_id)
    model_uri = run.data.tags.get("genforge.model_uri")
    if not model_uri:
        raise SpecError(
            f"--run {run_id}: the run has no logged model (training unfinished, or a trial that did not win)"
        )
    weights = current_model_artifact(client, run_id)
    existing = [
        v
        for v in registry_call(
            lambda: client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"), f"listing {name}"
        )
        if v.tags.get("model_artifact") == weights
    ]
    if existing:  # the same weights are registered already: one version per set of weights
        v = max(existing, key=lambda mv: int(mv.version))
        echo(f"[genforge] run {run_id} ({weights}) is already {name} version {v.version}")
        return version_summary(client.get_model_version(name, v.version))
    if current_evaluation(run) is None:
        echo(f"[genforge] run {run_id} has no evaluation of its current weights yet: evaluating first")
        evaluate_run(tracking_uri, run_id, overrides=overrides, echo=echo)
        run = client.get_run(run_id)
    tags = _version_tags(client, run, run_id)
    if registry_call(lambda: client.get_registered_model(name), f"reading {name}", missing_ok=True) is None:
        registry_call(
            lambda: client.create_registered_model(
                name, tags={"genforge.dataset": tags["dataset"], "genforge.family": tags["family"]}
            ),
            f"creating {name}",
        )
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        v = mlflow.register_model(model_uri, name, tags=tags)
    finally:
        mlflow.set_tracking_uri(previous)
    fid, fid_std = float(tags["fid"]), float(tags["fid_std"])
    echo(f"[genforge] registered {name} version {v.version} (fid {fid:.4f} +- {fid_std:.4f})")
    return version_summary(client.get_model_version(name, v.version))


def evaluation_report(client, run_id: str, report_dir: str) -> dict[str, Any]:
    """The report.json of one evaluation of a run: every number of one protocol and one set of weights."""
    import json
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = registry_call(
            lambda: client.download_artifacts(run_id, f"{report_dir}/report.json", tmp),
            f"reading the evaluation report of run {run_id}",
        )
        return json.loads(Path(path).read_text())


def _version_tags(client, run, run_id: str) -> dict[str, str]:
    """A version's tags: lineage, the weights it serves, and every metric of their evaluation, all from one report
    (so fid, kid, precision... never mix protocols or weights), with the protocol that produced them."""
    t = run.data.tags
    report = evaluation_report(client, run_id, t[EVAL + "report"])
    tags = {key: repr(float(value)) for key, value in report["metrics"].items()}
    tags.update(
        {
            "protocol_hash": report["protocol"]["hash"],
            "protocol_name": report["protocol"]["name"],
            "model_artifact": report["model_artifact"],
            "dataset": t["genforge.dataset"],
            "family": t["genforge.family"],
            "spec_hash": t["genforge.spec_fingerprint"],
            "git_commit": t.get("mlflow.source.git.commit", "unknown"),
            "genforge_version": t.get("genforge.version", "unknown"),
            "constraints_sha256": t.get("genforge.constraints_sha256", "unknown"),
            "dataset_fingerprint": _dataset_digest(run),
            "run_id": run_id,
        }
    )
    if "genforge.image" in t:
        tags["image"] = t["genforge.image"]
    return tags


def _dataset_digest(run) -> str:
    """The digest of the run's training dataset input (its content fingerprint)."""
    inputs = run.inputs.dataset_inputs if run.inputs else []
    return next((i.dataset.digest for i in inputs), "unknown")


def list_models(tracking_uri: str, name: str | None = None) -> list[RegisteredVersion]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    if name:
        names = [name]
    else:
        names = [m.name for m in registry_call(client.search_registered_models, "listing registered models")]
    out = []
    for n in names:
        versions = registry_call(lambda n=n: client.search_model_versions(f"name = '{n}'"), f"listing {n}")
        for v in sorted(versions, key=lambda v: int(v.version)):
            out.append(
                version_summary(registry_call(lambda v=v: client.get_model_version(v.name, v.version), "reading"))
            )
    return out
