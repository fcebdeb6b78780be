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
JSON_HELP = "Print the result as one JSON object on the last stdout line."


def spec_command(fn):
    """The shared face of commands that run a spec: SPEC, --set KEY=VALUE..., --json."""
    fn = click.option("--json", "as_json", is_flag=True, help=JSON_HELP)(fn)
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)(fn)
    return click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))(fn)


def run_on_ray(fn):
    """Call fn(); if this call started Ray, shut it down after, which also flushes the forwarded worker
    logs so the result line really is the last line on stdout."""
    import ray

    started = not ray.is_initialized()
    try:
        return fn()
    finally:
        if started and ray.is_initialized():
            ray.shutdown()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="genforge")
def cli() -> None:
    """Train, tune, evaluate and ship image generative models with Ray and MLflow."""


@cli.command()
@spec_command
@click.option("--dry-run", is_flag=True, help="Validate the spec and data, print the plan, start nothing.")
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

    from genforge.training.driver import train as run_training

    result = run_on_ray(lambda: run_training(spec, echo=lambda msg: click.echo(msg, err=as_json)))
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


@cli.command()
@spec_command
def tune(spec_path: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Sweep the hyperparameters in SPEC's `tune` section with Ray Tune (Optuna TPE + ASHA by default).

    Each trial trains the spec with its sampled values as a child MLflow run of the sweep's parent run;
    the parent holds the leaderboard. Re-running the same command resumes an interrupted sweep.
    """
    import json

    from genforge.config import load_spec
    from genforge.tuning.sweep import tune_sweep

    spec = load_spec(spec_path, overrides)
    result = run_on_ray(lambda: tune_sweep(spec, echo=lambda m: click.echo(m, err=as_json)))
    if as_json:
        click.echo(json.dumps(result.to_dict(), default=str))
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
        values = [f"{r['config'][k]:.4g}" if isinstance(r["config"].get(k), float) else str(r["config"].get(k)) for k in keys]
        table.add_row(str(r["rank"]), r["trial_id"], r["status"] + (" (early)" if "early" in r["reason"] else ""),
                      str(r["epochs"]), obj, *values)
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    click.echo(f"best: run {result.best_run_id} {result.metric}={result.best_objective:.4f} config={result.best_config}")
    click.echo(f"parent run: {result.parent_run_id} (leaderboard under its 'sweep/' artifacts)")


@cli.command()
@click.option("--run", "run_id", metavar="RUN_ID", help="The MLflow run to evaluate.")
@click.option("--model", "model_uri", metavar="MODEL_URI", help="Or a model URI (runs:/..., models:/NAME@ALIAS).")
@click.option("--samples", type=click.IntRange(min=10), help="Generated samples per draw (evaluate.samples).")
@click.option("--extractor", type=click.Choice(["domain", "inception"]), help="Feature extractor (evaluate.extractor).")
@click.option("--seed", type=int, help="Seed of the first draw (evaluate.seed).")
@click.option("--seeds", type=click.IntRange(min=1), help="Independent draws for FID/KID mean +- std (evaluate.seeds).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override evaluate.* keys of the run's spec.")
@click.option("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else ./mlflow.db).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics and protocol as one JSON object on the last stdout line.")
def evaluate(run_id, model_uri, samples, extractor, seed, seeds, overrides, tracking_uri, as_json) -> None:
    """Evaluate a trained model: FID, KID, precision/recall, density/coverage, IS analogue, diversity;
    reconstruction and NLL for VAEs; per-class accuracy and FID for conditional models."""
    import json

    if bool(run_id) == bool(model_uri):
        raise click.UsageError("give exactly one of --run RUN_ID or --model MODEL_URI")
    cli_sets = [f"evaluate.{k}={v}" for k, v in
                (("samples", samples), ("extractor", extractor), ("seed", seed), ("seeds", seeds)) if v is not None]
    bad = [o for o in overrides if not o.startswith("evaluate.")]
    if bad:
        raise click.UsageError(f"--set {bad[0]}: evaluate takes evaluate.* keys only")
    from genforge.evaluator.run_evaluation import evaluate_run
    from genforge.tracking.uri import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    result = evaluate_run(uri, run_id, model_uri, [*overrides, *cli_sets], echo=lambda m: click.echo(m, err=as_json))
    if as_json:
        click.echo(json.dumps({k: result[k] for k in ("run_id", "metrics", "protocol", "extractor", "per_class", "report")}))
        return
    p = result["protocol"]
    click.echo(f"\nrun {result['run_id']}  protocol {p['name']} ({p['hash']}): {p['samples']} samples x "
               f"{len(p['seeds'])} draws vs {p['reference_n']} real ({p['dataset']}/{p['split']}), "
               f"{p['extractor']} features {p['extractor_hash']}")
    m = result["metrics"]
    click.echo(f"  {'fid':>22} {m['fid']:.4f} +- {m['fid_std']:.4f}")
    click.echo(f"  {'kid':>22} {m['kid']:.5f} +- {m['kid_std']:.5f}")
    for key in sorted(k for k in m if k not in ("fid", "fid_std", "kid", "kid_std")):
        click.echo(f"  {key:>22} {m[key]:.4f}")
    for c, values in sorted(result["per_class"].items(), key=lambda kv: int(kv[0])):
        click.echo(f"  class {c:>2}: " + "  ".join(f"{k} {v:.3f}" for k, v in sorted(values.items())))
    click.echo(f"  report: {result['report']}")


@cli.group()
def extractor() -> None:
    """Feature extractors used by evaluation."""


@extractor.command("train")
@click.option("--dataset", required=True, help="Dataset registry name.")
@click.option("--root", help="data.root for datasets read from disk.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else ./mlflow.db).")
@click.option("--json", "as_json", is_flag=True, help="Print the extractor's facts as JSON on the last stdout line.")
def extractor_train(dataset: str, root: str | None, epochs: int, tracking_uri: str | None, as_json: bool) -> None:
    """Train (or find cached) the domain classifier of DATASET and log it to MLflow."""
    import json

    from genforge.config import spec_from_dict
    from genforge.data import load_dataset
    from genforge.evaluator.extractors import domain_extractor
    from genforge.tracking.extractor_logging import log_extractor
    from genforge.tracking.uri import resolve_tracking_uri

    spec = spec_from_dict({"name": "extractor", "data": {"dataset": dataset, "root": root}}, source="--dataset")
    data = load_dataset(spec.data)
    _, meta, path = domain_extractor(data, epochs, echo=lambda m: click.echo(m, err=as_json))
    run_id = log_extractor(resolve_tracking_uri(tracking_uri), meta, path)
    facts = {**meta, "path": str(path), "mlflow_run_id": run_id}
    click.echo(json.dumps(facts) if as_json else "\n".join(f"{k:>20}: {v}" for k, v in facts.items()))


TRACKING_HELP = "MLflow tracking URI (default: MLFLOW_TRACKING_URI, else ./mlflow.db)."


def _uri(tracking_uri: str | None) -> str:
    from genforge.tracking.uri import require_existing_store, resolve_tracking_uri

    return require_existing_store(resolve_tracking_uri(tracking_uri))


def _emit(payload, as_json: bool, text: str) -> None:
    import json

    click.echo(json.dumps(payload, default=str) if as_json else text)


@cli.command()
@click.option("--run", "run_id", required=True, metavar="RUN_ID", help="The training (or best trial) run.")
@click.option("--name", help="Registered model name (default: the spec's register.model_name, else {dataset}-{family}).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="evaluate.* keys for the evaluation, if one is needed.")
@click.option("--tracking-uri", help=TRACKING_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON on the last stdout line.")
def register(run_id: str, name: str | None, overrides: tuple[str, ...], tracking_uri: str | None, as_json: bool) -> None:
    """Register a run's model (evaluating it first if needed) with its metrics and protocol as tags."""
    from genforge.model_registry.versions import register_run

    bad = [o for o in overrides if not o.startswith("evaluate.")]
    if bad:
        raise click.UsageError(f"--set {bad[0]}: register takes evaluate.* keys only")
    v = register_run(_uri(tracking_uri), run_id, name, list(overrides), echo=lambda m: click.echo(m, err=as_json))
    _emit(v, as_json, f"{v['name']} version {v['version']}: fid {v['fid']} +- {v['fid_std']} ({v['protocol']}); {v['uri']}")


@cli.command()
@click.argument("model_name")
@click.option("--version", type=click.IntRange(min=1), help="Candidate version (default: the latest).")
@click.option("--alias", default="champion", show_default=True)
@click.option("--metric", default="fid", show_default=True, help="Version tag compared.")
@click.option("--mode", type=click.Choice(["min", "max"]), default="min", show_default=True)
@click.option("--min-improvement", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option("--tracking-uri", help=TRACKING_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON on the last stdout line.")
def promote(model_name, version, alias, metric, mode, min_improvement, tracking_uri, as_json) -> None:
    """Move ALIAS to a version only if it beats the current holder under the same protocol by more than
    --min-improvement and the measured noise. Concurrent promotions are serialised."""
    from genforge.model_registry.promotion import promote as do_promote

    d = do_promote(_uri(tracking_uri), model_name, version, alias, metric, mode, min_improvement)
    verdict = "PROMOTED" if d.promoted else "not promoted"
    _emit(d.to_dict(), as_json, f"{model_name} v{d.candidate} @{alias}: {verdict}. {d.reason}")


@cli.command()
@click.argument("model_name")
@click.option("--alias", default="champion", show_default=True)
@click.option("--tracking-uri", help=TRACKING_HELP)
@click.option("--json", "as_json", is_flag=True)
def rollback(model_name: str, alias: str, tracking_uri: str | None, as_json: bool) -> None:
    """Give ALIAS back to the version the current holder took it from."""
    from genforge.model_registry.promotion import rollback as do_rollback

    r = do_rollback(_uri(tracking_uri), model_name, alias)
    _emit(r, as_json, f"{model_name} @{alias}: version {r['from_version']} -> {r['to_version']}")


@cli.command()
@click.argument("model_uri")
@click.option("-n", "count", type=click.IntRange(min=1, max=10000), default=64, show_default=True)
@click.option("--label", type=click.IntRange(min=0), help="Class label (conditional models; default: cycle through classes).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
@click.option("--tracking-uri", help=TRACKING_HELP)
def generate(model_uri: str, count: int, label: int | None, seed: int, out: str, tracking_uri: str | None) -> None:
    """Generate a grid of COUNT images from MODEL_URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/...)."""
    import math

    import torch
    from mlflow import MlflowClient

    from genforge.evaluator.run_evaluation import resolve_run
    from genforge.images import save_grid
    from genforge.tracking.loading import load_run_model

    uri = _uri(tracking_uri)
    run_id = resolve_run(MlflowClient(uri), None, model_uri)
    model = load_run_model(uri, run_id)
    labels = None
    if model.manifest["conditional"]:
        if label is not None and label >= model.num_classes:
            raise SpecError(f"--label {label}: the model has classes 0..{model.num_classes - 1}")
        labels = torch.full((count,), label) if label is not None else torch.arange(count) % model.num_classes
    elif label is not None:
        raise SpecError(f"--label: {model_uri} is not a conditional model")
    images = model.generate(count, labels, seed=seed)
    path = save_grid(images, int(math.ceil(math.sqrt(count))), out)
    click.echo(f"wrote {count} images from {model_uri} (run {run_id}) to {path}")


@cli.command("models")
@click.argument("name", required=False)
@click.option("--tracking-uri", help=TRACKING_HELP)
@click.option("--json", "as_json", is_flag=True)
def models_cmd(name: str | None, tracking_uri: str | None, as_json: bool) -> None:
    """List registered models: versions, aliases, FID and protocol."""
    from genforge.model_registry.versions import list_models

    rows = list_models(_uri(tracking_uri), name)
    if as_json:
        _emit(rows, True, "")
        return
    if not rows:
        click.echo("no registered models")
    for r in rows:
        aliases = " ".join(f"@{a}" for a in r["aliases"])
        fid = f"{float(r['fid']):.4f} +- {float(r['fid_std']):.4f}" if r["fid"] else "-"
        click.echo(f"{r['name']:>24} v{r['version']:<3} {aliases:<12} fid {fid:<20} {r['protocol'] or ''}  run {r['run_id']}")


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
    import os

    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep stderr for messages
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # e.g. "Creating initial MLflow database tables"
    try:
        cli.main(args=argv, prog_name="genforge", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)  # Ctrl-C: the command already said what it saved and how to continue
    except click.UsageError as exc:  # includes bad options and missing arguments: one line, exit 2
        _error(exc.format_message(), 2)
    except SpecError as exc:
        _error(str(exc), 2)
    except RunError as exc:
        _error(str(exc), 1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # an unexpected failure: one line, the traceback on request
        if os.environ.get("GENFORGE_DEBUG"):
            raise
        _error(f"{type(exc).__name__}: {exc} (set GENFORGE_DEBUG=1 for the traceback)", 1)


if __name__ == "__main__":
    main()
