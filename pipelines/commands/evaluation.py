"""`genforge evaluate` and `genforge extractor train`."""

from __future__ import annotations

import click

from pipelines.options import echo_for, emit, json_option, spec_command, tracking_option


@click.command()
@click.option("--run", "run_id", metavar="RUN_ID", help="The MLflow run to evaluate.")
@click.option("--model", "model_uri", metavar="MODEL_URI", help="Or a model URI (runs:/..., models:/NAME@ALIAS).")
@click.option("--samples", type=click.IntRange(min=10), help="Generated samples per draw (evaluate.samples).")
@click.option("--extractor", type=click.Choice(["domain", "inception"]), help="Feature extractor (evaluate.extractor).")
@click.option("--seed", type=int, help="Seed of the first draw (evaluate.seed).")
@click.option("--seeds", type=click.IntRange(min=1), help="Independent draws for FID/KID mean +- std (evaluate.seeds).")
@spec_command(spec_argument=False, sections=("evaluate",))
@tracking_option
def evaluate(run_id, model_uri, samples, extractor, seed, seeds, overrides, as_json, tracking_uri) -> None:
    """Evaluate a trained model: FID, KID, precision/recall, density/coverage, IS analogue, diversity;
    reconstruction and NLL for VAEs; per-class accuracy and FID for conditional models.

    \b
    Examples:
      genforge evaluate --run RUN_ID
      genforge evaluate --model models:/mnist5k-vae@champion --samples 5000 --seeds 3 --json
    """
    import genforge

    named = (("samples", samples), ("extractor", extractor), ("seed", seed), ("seeds", seeds))
    sets = [*overrides, *(f"evaluate.{k}={v}" for k, v in named if v is not None)]
    result = genforge.evaluate(run_id, model_uri=model_uri, overrides=sets, tracking_uri=tracking_uri,
                               echo=echo_for(as_json))
    emit(result, as_json, _describe(result))


def _describe(result) -> str:
    p, m = result.protocol, result.metrics
    lines = [f"\nrun {result.run_id}  protocol {p['name']} ({p['hash']}): {p['samples']} samples x "
             f"{len(p['seeds'])} draws vs {p['reference_n']} real ({p['dataset']}/{p['split']}), "
             f"{p['extractor']} features {p['extractor_hash']}",
             f"  {'fid':>22} {m['fid']:.4f} +- {m['fid_std']:.4f}",
             f"  {'kid':>22} {m['kid']:.5f} +- {m['kid_std']:.5f}"]
    lines += [f"  {key:>22} {m[key]:.4f}" for key in sorted(m) if key not in ("fid", "fid_std", "kid", "kid_std")]
    for c, values in sorted(result.per_class.items(), key=lambda kv: int(kv[0])):
        lines.append(f"  class {c:>2}: " + "  ".join(f"{k} {v:.3f}" for k, v in sorted(values.items())))
    lines.append(f"  report: {result.report}")
    return "\n".join(lines)


@click.group()
def extractor() -> None:
    """Feature extractors used by evaluation."""


@extractor.command("train")
@click.option("--dataset", required=True, help="Dataset name (see `genforge datasets`).")
@click.option("--root", help="data.root for datasets read from disk.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@tracking_option
@json_option
def extractor_train(dataset: str, root: str | None, epochs: int, tracking_uri: str | None, as_json: bool) -> None:
    """Train (or find cached) the domain classifier of DATASET and log it to MLflow."""
    from genforge.config import spec_from_dict
    from genforge.data import load_dataset
    from genforge.evaluator.extractors import domain_extractor
    from genforge.tracking.extractor_logging import log_extractor
    from genforge.tracking.uri import resolve_tracking_uri

    spec = spec_from_dict({"name": "extractor", "data": {"dataset": dataset, "root": root}}, source="--dataset")
    data = load_dataset(spec.data)
    _, meta, path = domain_extractor(data, epochs, echo=echo_for(as_json))
    run_id = log_extractor(resolve_tracking_uri(tracking_uri), meta, path)
    facts = {**meta, "path": str(path), "mlflow_run_id": run_id}
    emit(facts, as_json, "\n".join(f"{k:>20}: {v}" for k, v in facts.items()))
