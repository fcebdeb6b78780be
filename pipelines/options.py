"""Options shared by several commands, each defined once with one help text."""

from __future__ import annotations

from typing import Callable

import click

SET_HELP = "Override a spec key, e.g. --set train.epochs=5 (repeatable; the value is parsed as YAML)."
JSON_HELP = "Print the result as one JSON object on the last stdout line (progress goes to stderr)."
TRACKING_HELP = "MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in this directory)."

json_option = click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
tracking_option = click.option("--tracking-uri", metavar="URI", help=TRACKING_HELP)


def _only_sections(command: str, sections: tuple[str, ...]) -> Callable:
    """A --set callback that accepts only keys under `sections` (evaluate and register take evaluate.* keys)."""

    def check(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if not value.startswith(tuple(f"{s}." for s in sections)):
                keys = ", ".join(f"{s}.*" for s in sections)
                raise click.UsageError(f"--set {value}: {command} takes {keys} keys only")
        return values

    return check


def spec_command(fn: Callable | None = None, *, spec_argument: bool = True, sections: tuple[str, ...] = ()) -> Callable:
    """The shared face of commands driven by a spec: SPEC (when the command reads one), --set KEY=VALUE..., --json.

    Commands that work on a tracked run (evaluate, register) take no SPEC: their spec is the run's, and their
    --set accepts only the `sections` they use."""

    def decorate(f: Callable) -> Callable:
        f = json_option(f)
        callback = _only_sections(f.__name__, sections) if sections else None
        help_text = (
            SET_HELP if not sections else f"Override {', '.join(s + '.*' for s in sections)} keys of the run's spec."
        )
        f = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", callback=callback, help=help_text)(f)
        if spec_argument:
            f = click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))(f)
        return f

    return decorate(fn) if fn is not None else decorate


def echo_for(as_json: bool) -> Callable[[str], None]:
    """Progress goes to stdout, or to stderr when stdout carries the JSON result."""
    return lambda message: click.echo(message, err=as_json)


def emit(result, as_json: bool, text: str) -> None:
    """Print the --json line (a dataclass's to_dict(), or plain data) or the human summary."""
    import json

    if as_json:
        payload = result.to_dict() if hasattr(result, "to_dict") else result
        click.echo(json.dumps(payload, default=str))
    else:
        click.echo(text)
