"""The MLflow model registry: `register`, `promote`, `rollback`, `models`, and `generate` from a model."""

from __future__ import annotations

import click

from pipelines.options import echo_for, emit, json_option, spec_command, tracking_option


@click.command()
@click.option("--run", "run_id", required=True, metavar="RUN_ID", help="The training (or best trial) run.")
@click.option(
    "--name", help="Registered model name (default: the spec's register.model_name, else {dataset}-{family})."
)
@spec_command(spec_argument=False, sections=("evaluate",))
@tracking_option
def register(
    run_id: str, name: str | None, overrides: tuple[str, ...], as_json: bool, tracking_uri: str | None
) -> None:
    """Register a run's model (evaluating it first if needed) with its metrics and protocol as tags."""
    import genforge

    v = genforge.register(run_id, name=name, overrides=overrides, tracking_uri=tracking_uri, echo=echo_for(as_json))
    emit(v, as_json, f"{v.name} version {v.version}: fid {v.fid} +- {v.fid_std} ({v.protocol}); {v.uri}")


def _parse_gates(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list:
    """--gate texts as Gates, parsed before anything is read or written (a malformed one: one line, exit 2)."""
    from genforge.errors import SpecError
    from genforge.model_registry.gates import parse_gate

    try:
        return [parse_gate(v) for v in values]
    except SpecError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("model_name")
@click.option("--version", type=click.IntRange(min=1), help="Candidate version (default: the latest).")
@click.option("--alias", default="champion", show_default=True)
@click.option("--metric", default="fid", show_default=True, help="Version tag compared.")
@click.option(
    "--mode", type=click.Choice(["min", "max"]), help="Better when lower or higher (default: the metric's own)."
)
@click.option("--min-improvement", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--gate", "gates", multiple=True, metavar="METRIC<=VALUE", callback=_parse_gates,
              help="A requirement on the candidate's own metrics (also >=, <, >, ==), e.g. --gate fid_ratio<=20 "
              "(repeatable); a version that fails one stays registered and is not promoted.")
@tracking_option
@json_option
def promote(model_name, version, alias, metric, mode, min_improvement, gates, tracking_uri, as_json) -> None:
    """Move ALIAS to a version only if it meets every --gate and beats the current holder under the same protocol
    by more than --min-improvement and the measured noise. Concurrent promotions converge on the best version.

    \b
    Example:
      genforge promote mnist5k-vae --gate fid_ratio<=20 --gate recognisable>=0.5
    """
    import genforge

    d = genforge.promote(model_name, version=version, alias=alias, metric=metric, mode=mode,
                         min_improvement=min_improvement, gates=gates, tracking_uri=tracking_uri)
    emit(
        d, as_json, f"{model_name} v{d.candidate} @{alias}: {'PROMOTED' if d.promoted else 'not promoted'}. {d.reason}"
    )


@click.command()
@click.argument("model_name")
@click.option("--alias", default="champion", show_default=True)
@click.option("--metric", default="fid", show_default=True, help="Metric that ranks the versions still eligible.")
@tracking_option
@json_option
def rollback(model_name: str, alias: str, metric: str, tracking_uri: str | None, as_json: bool) -> None:
    """Take ALIAS from its holder for good (a later `genforge run` will not promote it again) and give it to the
    best version still eligible, normally the one the holder took it from."""
    import genforge

    r = genforge.rollback(model_name, alias=alias, metric=metric, tracking_uri=tracking_uri)
    emit(r, as_json, f"{model_name} @{alias}: version {r.from_version} -> {r.to_version}")


@click.command()
@click.argument("model_uri")
@click.option("-n", "count", type=click.IntRange(min=1, max=10000), default=64, show_default=True)
@click.option(
    "--label", type=click.IntRange(min=0), help="Class label (conditional models; default: cycle through classes)."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
@tracking_option
@json_option
def generate(
    model_uri: str, count: int, label: int | None, seed: int, out: str, tracking_uri: str | None, as_json: bool
) -> None:
    """Generate a grid of COUNT images from MODEL_URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/...).

    \b
    Example:
      genforge generate models:/mnist5k-vae@champion -n 64 --out samples.png
    """
    import genforge

    g = genforge.generate(model_uri, count, label=label, seed=seed, out=out, tracking_uri=tracking_uri)
    emit(g, as_json, f"wrote {count} images from {model_uri} (run {g.run_id}) to {g.path}")


@click.command("models")
@click.argument("name", required=False)
@tracking_option
@json_option
def models(name: str | None, tracking_uri: str | None, as_json: bool) -> None:
    """List registered models: versions, aliases, FID and protocol."""
    import genforge

    rows = genforge.list_models(name, tracking_uri=tracking_uri)
    if as_json:
        emit([r.to_dict() for r in rows], True, "")
        return
    if not rows:
        click.echo("no registered models")
    for r in rows:
        aliases = " ".join(f"@{a}" for a in r.aliases)
        fid = f"{float(r.fid):.4f} +- {float(r.fid_std):.4f}" if r.fid else "-"
        click.echo(f"{r.name:>24} v{r.version:<3} {aliases:<12} fid {fid:<20} {r.protocol or ''}  run {r.run_id}")
