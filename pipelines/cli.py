"""The `genforge` command line: a thin click layer over genforge's Python API (and `pipelines.run`).

Exit codes: 0 success; 2 bad input (one line on stderr naming the problem, nothing created in
MLflow); 1 a failure during the run; 130 stopped by Ctrl-C, 143 by SIGTERM (a checkpoint was written). Heavy
libraries (torch, Ray, MLflow) are imported inside commands so `--help` and input errors are fast.
"""

from __future__ import annotations

import os
import sys

import click

from genforge.errors import RunError, SpecError, Terminated
from pipelines.commands import catalogue, evaluation, jobs, kfp_pipeline, registry, training


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="genforge")
@click.option(
    "-v", "--verbose", is_flag=True, help="Also show Ray's and MLflow's own output (worker logs, Tune tables)."
)
def cli(verbose: bool) -> None:
    """Train, tune, evaluate and ship image generative models with Ray and MLflow."""
    import logging

    if verbose:
        os.environ["GENFORGE_VERBOSE"] = "1"  # read by genforge.ray_runtime, and inherited by Ray workers
        os.environ["MLFLOW_LOGGING_LEVEL"] = "INFO"
    logging.getLogger("mlflow").setLevel(logging.INFO if verbose else logging.WARNING)


for command in (
    training.train,
    training.tune,
    training.run,
    evaluation.evaluate,
    evaluation.extractor,
    registry.register,
    registry.promote,
    registry.rollback,
    registry.models,
    registry.generate,
    catalogue.datasets,
    catalogue.families,
    jobs.submit,
    jobs.jobs,
    kfp_pipeline.pipeline,
):
    cli.add_command(command)


def _error(message: str, code: int) -> None:
    click.echo(f"genforge: error: {' '.join(str(message).split())}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the group, turn every error into one line and an exit code."""
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep stderr for messages
    # MLflow prints "View run ... at: URL" to stdout whenever a run on a tracking server ends; genforge says
    # which run it wrote in its own summary.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # MLflow sets its logger's level from this when first imported (e.g. "Creating initial MLflow database tables").
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        cli.main(args=argv, prog_name="genforge", standalone_mode=False)
    except click.exceptions.Abort as exc:
        # Ctrl-C (130) or SIGTERM (143): the command already said what it saved and how to continue.
        sys.exit(143 if isinstance(exc.__cause__ or exc.__context__, Terminated) else 130)
    except click.UsageError as exc:  # includes bad options and missing arguments: one line, exit 2
        _error(exc.format_message(), 2)
    except SpecError as exc:
        _error(str(exc), 2)
    except RunError as exc:
        _error(str(exc), 1)
    except KeyboardInterrupt as exc:
        sys.exit(143 if isinstance(exc, Terminated) else 130)
    except Exception as exc:  # an unexpected failure: one line, the traceback on request
        if os.environ.get("GENFORGE_DEBUG"):
            raise
        _error(f"{type(exc).__name__}: {exc} (set GENFORGE_DEBUG=1 for the traceback)", 1)


if __name__ == "__main__":
    main()
