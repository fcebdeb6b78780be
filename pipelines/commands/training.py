"""`genforge train`, `genforge tune` and `genforge run`: commands that run a spec."""

from __future__ import annotations

import json
import sys

import click

from pipelines.options import echo_for, emit, spec_command


def _run_on_ray(fn):
    from genforge.ray_runtime import run_on_ray

    return run_on_ray(fn)


@click.command()
@spec_command
@click.option("--dry-run", is_flag=True, help="Validate the spec and data, print the plan, start nothing.")
def train(spec_path: str, overrides: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Train the model a SPEC describes with Ray Train, tracked in MLflow.

    Re-running the same command continues the same run from its latest checkpoint; raise
    train.epochs to extend a finished run.

    \b
    Examples:
      genforge train pipelines/quickstart.yaml
      genforge train pipelines/quickstart.yaml --set train.epochs=30 --set train.workers=2
      genforge train pipelines/quickstart.yaml --dry-run
    """
    import genforge
    from genforge.config import load_spec

    spec = load_spec(spec_path, overrides)
    if dry_run:
        from genforge.training.driver import plan

        info = _plan_info(plan(spec, dry_run=True))
        click.echo(json.dumps(info) if as_json else json.dumps(info, indent=2))
        return
    result = _run_on_ray(lambda: genforge.train(spec, echo=echo_for(as_json)))
    if as_json:
        click.echo(result.to_json())
        return
    click.echo(f"\nrun {result.run_id} ({result.status}) in experiment '{result.experiment}'")
    for key in sorted(k for k in result.metrics if not k.startswith("train/")):
        click.echo(f"  {key:>20} {result.metrics[key]:.4f}")
    click.echo(f"  checkpoint: {result.checkpoint}")
    click.echo(f"  model:      {result.model_uri}")
    click.echo(f"Look at it:  mlflow ui --backend-store-uri {result.tracking_uri}  (then open http://127.0.0.1:5000)")
    click.echo(f"Evaluate it: genforge evaluate --run {result.run_id}")


def _plan_info(p) -> dict:
    """What --dry-run prints: where the run would go and whether it would resume."""
    return {
        "name": p.spec.name,
        "tracking_uri": p.tracking_uri,
        "experiment": p.experiment,
        "run_dir": str(p.run_dir),
        "image_shape": list(p.image_shape),
        "num_classes": p.num_classes,
        "resume_run_id": p.resume_run_id,
        "resume_checkpoint": str(p.resume_checkpoint.path) if p.resume_checkpoint else None,
        "would_move_aside": str(p.orphaned) if p.orphaned else None,
        "spec": p.spec.model_dump(mode="json", by_alias=True),
    }


@click.command()
@spec_command
def tune(spec_path: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Sweep the hyperparameters in SPEC's `tune` section with Ray Tune (Optuna TPE + ASHA by default).

    Each trial trains the spec with its sampled values as a child MLflow run of the sweep's parent run;
    the parent holds the leaderboard. With tune.retrain_epochs set, the best trial's configuration is then
    trained from scratch for that many epochs as its own run (also a child of the parent, tagged
    genforge.retrain_of), and that run is the result (`best_run_id` in --json). Re-running the same command
    resumes an interrupted sweep or retrain, and reuses a finished one.

    \b
    Example:
      genforge tune pipelines/gan-sweep.yaml --set tune.num_samples=8
    """
    import genforge

    result = _run_on_ray(lambda: genforge.tune(spec_path, overrides, echo=echo_for(as_json)))
    if as_json:
        emit(result, True, "")
        return
    _print_leaderboard(result)


def _print_leaderboard(result) -> None:
    from rich.console import Console
    from rich.table import Table

    keys = sorted({k for row in result.leaderboard for k in row["config"]})
    table = Table(title=f"sweep leaderboard: {result.metric} ({result.mode})")
    for col in ("rank", "trial", "status", "epochs", result.metric, *keys):
        table.add_column(col)
    for r in result.leaderboard:
        obj = "-" if r["objective"] is None else f"{r['objective']:.4f}"
        values = [f"{r['config'][k]:.4g}" if isinstance(r["config"].get(k), float) else str(r["config"].get(k))
                  for k in keys]
        table.add_row(str(r["rank"]), r["trial_id"], r["status"] + (" (early)" if "early" in r["reason"] else ""),
                      str(r["epochs"]), obj, *values)
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    click.echo(
        f"best: run {result.best_trial_run_id or result.best_run_id} {result.metric}={result.best_objective:.4f} "
        f"config={result.best_config}"
    )
    if result.retrained_run_id:
        objective = "-" if result.retrained_objective is None else f"{result.retrained_objective:.4f}"
        click.echo(f"retrained: run {result.retrained_run_id} ({result.retrained_status}, {result.retrained_epochs} "
                   f"epochs) {result.metric}={objective}: the run to evaluate and register")
    click.echo(f"parent run: {result.parent_run_id} (leaderboard under its 'sweep/' artifacts)")


@click.command()
@spec_command
@click.option("--force", is_flag=True, help="Evaluate again even if the run already has an evaluation.")
def run(spec_path: str, overrides: tuple[str, ...], force: bool, as_json: bool) -> None:
    """Run the stages SPEC declares (`stages:`): train or tune, evaluate, register, promote.

    Safe to re-run: finished stages are not redone. Ends with a summary table.

    \b
    Example:
      genforge run pipelines/quickstart.yaml        # what `make demo` runs
    """
    import pipelines
    from genforge.config import load_spec

    spec = load_spec(spec_path, overrides)
    result = _run_on_ray(lambda: pipelines.run(spec, force=force, echo=echo_for(as_json)))
    if as_json:
        emit(result, True, "")
        return
    _summary(result)


def _summary(r) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"genforge run {r.name}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("stages", " -> ".join(r.stages) + (f"  (skipped: {', '.join(r.skipped)})" if r.skipped else ""))
    table.add_row("run", str(r.run_id))
    if r.best_config:
        table.add_row(
            "best config",
            ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.best_config.items()),
        )
    # The quality figures the shipped specs gate promotion on sit beside FID: fid_ratio (over real held-out images at
    # the same N), recognisable, class coverage and the worst label's accuracy.
    for key in (
        "fid",
        "fid_std",
        "fid_ratio",
        "kid",
        "precision",
        "recall",
        "coverage",
        "recognisable",
        "class_coverage",
        "cond_accuracy_min",
        "val_neg_elbo",
        "test_neg_elbo",
        "nll_iw_k64",
    ):
        if key in r.metrics:
            table.add_row(key, f"{r.metrics[key]:.4f}")
    if r.protocol:
        table.add_row("protocol", r.protocol)
    if r.registered:
        table.add_row(
            "registered", f"{r.registered['name']} version {r.registered['version']} ({r.registered_model_uri})"
        )
    if r.promotion:
        verdict = "promoted" if r.promotion["promoted"] else "not promoted"
        table.add_row("promotion", f"{verdict}: {r.promotion['reason']}")
    if r.champion_uri:
        table.add_row("champion", r.champion_uri)
    table.add_row("look", f"mlflow ui --backend-store-uri {r.tracking_uri}")
    Console(width=None if sys.stdout.isatty() else 140).print(table)
