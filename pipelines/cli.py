"""The `genforge` console script: genforge's commands plus `run`, the whole pipeline.

`run` lives here, not in genforge.cli, because it composes stages: pipelines -> genforge, never back.
"""

from __future__ import annotations

import json
import sys

import click

from genforge.cli import cli, run_on_ray, spec_command
from genforge.cli import main as genforge_main


@cli.command()
@spec_command
@click.option("--force", is_flag=True, help="Evaluate again even if the run already has an evaluation.")
def run(spec_path: str, overrides: tuple[str, ...], force: bool, as_json: bool) -> None:
    """Run the stages SPEC declares (`stages:`): train or tune, evaluate, register, promote.

    Safe to re-run: finished stages are not redone. Ends with a summary table.
    """
    from genforge.config import load_spec
    from pipelines.pipeline import run_pipeline

    spec = load_spec(spec_path, overrides)
    result = run_on_ray(lambda: run_pipeline(spec, force=force, echo=lambda m: click.echo(m, err=as_json)))
    if as_json:
        click.echo(json.dumps(result.to_dict(), default=str))
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
        table.add_row("best config", ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.best_config.items()))
    for key in ("fid", "fid_std", "kid", "precision", "recall", "coverage", "val_neg_elbo", "test_neg_elbo", "nll_iw_k64"):
        if key in r.metrics:
            table.add_row(key, f"{r.metrics[key]:.4f}")
    if r.protocol:
        table.add_row("protocol", r.protocol)
    if r.registered:
        table.add_row("registered", f"{r.registered['name']} version {r.registered['version']} ({r.registered_model_uri})")
    if r.promotion:
        verdict = "promoted" if r.promotion["promoted"] else "not promoted"
        table.add_row("promotion", f"{verdict}: {r.promotion['reason']}")
    if r.champion_uri:
        table.add_row("champion", r.champion_uri)
    table.add_row("look", f"mlflow ui --backend-store-uri {r.tracking_uri}")
    Console(width=None if sys.stdout.isatty() else 140).print(table)


def main(argv: list[str] | None = None) -> None:
    genforge_main(argv)


if __name__ == "__main__":
    main()
