"""Stage composition for `genforge run`: (train | tune) -> evaluate -> register -> promote.

Each stage is safe to re-run: training and sweeps resume or find nothing to do, an evaluated run is
not evaluated again (unless forced), registering a registered run returns its version, and promotion
re-checks the evidence under the lock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from genforge.config import Spec


@dataclass
class PipelineResult:
    name: str
    tracking_uri: str
    stages: list[str]
    run_id: str | None = None
    best_config: dict[str, Any] = field(default_factory=dict)
    sweep_parent_run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    protocol: str | None = None
    registered: dict[str, Any] | None = None
    registered_model_uri: str | None = None
    promotion: dict[str, Any] | None = None
    champion_uri: str | None = None
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_pipeline(spec: Spec, force: bool = False, echo: Callable[[str], None] = print) -> PipelineResult:
    from mlflow import MlflowClient

    from genforge.tracking.uri import resolve_tracking_uri

    uri = resolve_tracking_uri(spec.tracking.uri)
    result = PipelineResult(spec.name, uri, list(spec.stages))
    client = None
    for stage in spec.stages:
        echo(f"\n[genforge] === stage: {stage} ===")
        if stage == "train":
            from genforge.training.driver import train

            trained = train(spec, echo=echo)
            result.run_id = trained.run_id
        elif stage == "tune":
            from genforge.tuning.sweep import tune_sweep

            sweep = tune_sweep(spec, echo=echo)
            result.run_id, result.best_config = sweep.best_run_id, sweep.best_config
            result.sweep_parent_run_id = sweep.parent_run_id
        elif stage == "evaluate":
            from genforge.evaluator.run_evaluation import evaluate_run

            client = client or MlflowClient(uri)
            evaluated = "genforge.eval.protocol_hash" in client.get_run(_need_run(result, stage)).data.tags
            if evaluated and not force:
                result.skipped.append("evaluate")
                echo(f"[genforge] run {result.run_id} is already evaluated (--force to evaluate again)")
            else:
                evaluate_run(uri, result.run_id, echo=echo)
        elif stage == "register":
            from genforge.model_registry.versions import register_run

            result.registered = register_run(uri, _need_run(result, stage), spec.model_name, echo=echo)
            result.registered_model_uri = result.registered["uri"]
        elif stage == "promote":
            from genforge.model_registry.promotion import promote

            p = spec.promote
            decision = promote(uri, result.registered["name"], result.registered["version"], p.alias, p.metric, p.mode,
                               p.min_improvement)
            result.promotion = decision.to_dict()
            echo(f"[genforge] {'PROMOTED' if decision.promoted else 'not promoted'}: {decision.reason}")
            if decision.promoted or decision.previous == decision.candidate:
                result.champion_uri = f"models:/{decision.name}@{decision.alias}"
    if result.run_id:
        client = client or MlflowClient(uri)
        run = client.get_run(result.run_id)
        result.metrics = {k: v for k, v in sorted(run.data.metrics.items()) if not k.startswith("train/")}
        result.protocol = run.data.tags.get("genforge.eval.protocol_name")
    return result


def _need_run(result: PipelineResult, stage: str) -> str:
    assert result.run_id, f"{stage} runs after train or tune (the spec validation guarantees it)"
    return result.run_id
