"""`genforge run`: the spec's stages composed from genforge's Python API.

(train | tune) -> evaluate -> register -> promote. Each stage is safe to re-run: training and sweeps
resume or find nothing to do, an evaluated run is not evaluated again (unless forced), registering a
registered run returns its version, and promotion re-checks the evidence (and the spec's `promote.gates`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import genforge
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
    stopped: str | None = None  # training ended early by request (train.time_limit_s): later stages did not run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _train(spec: Spec, result: PipelineResult, force: bool, echo: Callable[[str], None]) -> None:
    trained = genforge.train(spec, echo=echo)
    result.run_id = trained.run_id
    if trained.status != "FINISHED":
        result.stopped = f"training {trained.status} at epoch {trained.epochs} of {spec.train.epochs}"


def _tune(spec: Spec, result: PipelineResult, force: bool, echo: Callable[[str], None]) -> None:
    """The sweep; its `best_run_id` goes on: the best trial, or with `tune.retrain_epochs` the best trial's
    configuration retrained to that budget (a run of its own; the leaderboard keeps ranking the trials)."""
    sweep = genforge.tune(spec, echo=echo)
    result.run_id, result.best_config, result.sweep_parent_run_id = (
        sweep.best_run_id,
        sweep.best_config,
        sweep.parent_run_id,
    )
    if sweep.retrained_status not in (None, "FINISHED"):  # train.time_limit_s stopped the retrain
        result.stopped = (f"retraining the best trial {sweep.retrained_status} at epoch {sweep.retrained_epochs} "
                          f"of {spec.tune.retrain_epochs}")


def _evaluate(spec: Spec, result: PipelineResult, force: bool, echo: Callable[[str], None]) -> None:
    from mlflow import MlflowClient

    from genforge.tracking.evaluation_logging import current_evaluation

    evaluated = current_evaluation(MlflowClient(result.tracking_uri).get_run(result.run_id)) is not None
    if evaluated and not force:
        result.skipped.append("evaluate")
        echo(f"[genforge] run {result.run_id} is already evaluated at its current weights (--force to evaluate again)")
        return
    genforge.evaluate(result.run_id, tracking_uri=result.tracking_uri, echo=echo)


def _register(spec: Spec, result: PipelineResult, force: bool, echo: Callable[[str], None]) -> None:
    version = genforge.register(result.run_id, name=spec.model_name, tracking_uri=result.tracking_uri, echo=echo)
    result.registered, result.registered_model_uri = version.to_dict(), version.uri


def _promote(spec: Spec, result: PipelineResult, force: bool, echo: Callable[[str], None]) -> None:
    """Promote under the spec's gates. A failed gate is a decision, not an error: the version stays registered, the
    alias stays where it was, and the result says which gate failed with which value (exit 0)."""
    from genforge.model_registry.gates import gates_from_mapping

    p = spec.promote
    decision = genforge.promote(result.registered["name"], version=result.registered["version"], alias=p.alias,
                                metric=p.metric, mode=p.mode, min_improvement=p.min_improvement,
                                gates=gates_from_mapping(p.gates), tracking_uri=result.tracking_uri)
    result.promotion = decision.to_dict()
    echo(f"[genforge] {'PROMOTED' if decision.promoted else 'not promoted'}: {decision.reason}")
    if decision.holds_alias:
        result.champion_uri = f"models:/{decision.name}@{decision.alias}"


STAGE_FUNCTIONS = {"train": _train, "tune": _tune, "evaluate": _evaluate, "register": _register, "promote": _promote}


def run(spec: Spec, force: bool = False, echo: Callable[[str], None] = print) -> PipelineResult:
    """Run `spec.stages` in order (the spec's validation guarantees train or tune comes first)."""
    from mlflow import MlflowClient

    from genforge.tracking.uri import check_tracking_server, resolve_tracking_uri

    spec = genforge.api.as_spec(spec)  # credentials out of the spec before any stage copies it
    result = PipelineResult(
        spec.name, check_tracking_server(resolve_tracking_uri(spec.tracking.uri)), list(spec.stages)
    )
    for i, stage in enumerate(spec.stages):
        echo(f"\n[genforge] === stage: {stage} ===")
        STAGE_FUNCTIONS[stage](spec, result, force, echo)
        if result.stopped:  # an unfinished model is never evaluated, registered or promoted
            result.skipped += spec.stages[i + 1 :]
            echo(f"[genforge] {result.stopped}: skipping {', '.join(spec.stages[i + 1:]) or 'nothing'}; "
                 "re-run the same command to continue")
            break
    if result.run_id:
        run_data = MlflowClient(result.tracking_uri).get_run(result.run_id).data
        result.metrics = {k: v for k, v in sorted(run_data.metrics.items()) if not k.startswith("train/")}
        result.protocol = run_data.tags.get("genforge.eval.protocol_name")
    return result
