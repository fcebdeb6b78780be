"""The `genforge` command line.

Exit codes: 0 success; 2 bad input (one line on stderr naming the problem, nothing created in
MLflow); 1 a failure during the run; 130 stopped by Ctrl-C (a checkpoint was written). Heavy
libraries (torch, Ray, MLflow) are imported inside commands so `--help` and input errors are fast.
"""

from __future__ import annotations

import sys

import click

from genforge.errors import RunError, SpecError

SET_HELP = "Override a spec key, e.g. --set train.epochs=5 (repeatable; the value is parsed as YAML)."


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="genforge")
def cli() -> None:
    """Train, tune, evaluate and ship image generative models with Ray and MLflow."""


@cli.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--dry-run", is_flag=True, help="Validate the spec and data, print the plan, start nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object on the last stdout line.")
def train(spec_path: str, overrides: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Train the model a SPEC describes with Ray Train, tracked in MLflow.

    Re-running the same command continues the same run from its latest checkpoint; raise
    train.epochs to extend a finished run.
    """
    import json

    from genforge.config import load_spec

    spec = load_spec(spec_path, overrides)
    if dry_run:
        from genforge.training.driver import plan

        p = plan(spec)
        info = {
            "name": spec.name,
            "tracking_uri": p.tracking_uri,
            "experiment": p.experiment,
            "run_dir": str(p.run_dir),
            "image_shape": list(p.image_shape),
            "num_classes": p.num_classes,
            "resume_run_id": p.resume_run_id,
            "resume_checkpoint": str(p.resume_checkpoint.path) if p.resume_checkpoint else None,
            "spec": spec.model_dump(mode="json", by_alias=True),
        }
        click.echo(json.dumps(info) if as_json else json.dumps(info, indent=2))
        return

    import ray

    from genforge.training.driver import train as run_training

    started_ray = not ray.is_initialized()
    try:
        result = run_training(spec, echo=lambda msg: click.echo(msg, err=as_json))
    finally:
        if started_ray and ray.is_initialized():
            ray.shutdown()  # flushes forwarded worker logs before the result line
    if as_json:
        click.echo(result.to_json())
        return
    click.echo(f"\nrun {result.run_id} ({result.status}) in experiment '{result.experiment}'")
    for key in sorted(k for k in result.metrics if not k.startswith("train/")):
        click.echo(f"  {key:>20} {result.metrics[key]:.4f}")
    click.echo(f"  checkpoint: {result.checkpoint}")
    click.echo(f"  model:      {result.model_uri}")
    click.echo(f"Look at it: mlflow ui --backend-store-uri {result.tracking_uri}  (then open http://127.0.0.1:5000)")


@cli.command()
def datasets() -> None:
    """List the registered datasets."""
    from genforge.data import DATASETS

    for name in DATASETS:
        click.echo(name)


@cli.command()
def families() -> None:
    """List the registered model families."""
    from genforge.models import FAMILIES

    for fam in FAMILIES.values():
        click.echo(f"{fam.name:6} {fam.pattern:12} {'conditional' if fam.conditional else '':12} {fam.summary}")


def _error(message: str, code: int) -> None:
    click.echo(f"genforge: error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="genforge", standalone_mode=False)
    except click.exceptions.Abort:
        _error("aborted", 130)
    except click.UsageError as exc:  # includes bad options and missing arguments: one line, exit 2
        _error(exc.format_message(), 2)
    except SpecError as exc:
        _error(str(exc), 2)
    except RunError as exc:
        _error(str(exc), 1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
