"""`genforge pipeline compile`: a spec as a Kubeflow Pipelines (KFP v2) pipeline file."""

from __future__ import annotations

import click

from pipelines.options import emit, spec_command

IMAGE_HELP = "Image the components run in (default: GENFORGE_IMAGE, else genforge:0.1.0); it needs genforge[kubeflow]."
RAY_HELP = ("Where the train/tune task runs its work: the Ray Jobs API, e.g. "
            "http://genforge-head-svc.genforge.svc.cluster.local:8265 (k8s/'s RayCluster; the task submits a Ray job), "
            "or a ray:// Ray Client address; default: a Ray inside the task's pod.")


@click.group()
def pipeline() -> None:
    """Kubeflow Pipelines: the spec's stages as a KFP v2 pipeline (needs the kubeflow extra)."""


@pipeline.command("compile")
@spec_command
@click.option("--out", "out_path", required=True, metavar="FILE.yaml", type=click.Path(dir_okay=False),
              help="Pipeline file to write (KFP v2 YAML).")
@click.option("--image", metavar="IMAGE", help=IMAGE_HELP)
@click.option("--ray-address", metavar="ADDRESS", help=RAY_HELP)
def compile_(spec_path: str, overrides: tuple[str, ...], out_path: str, image: str | None, ray_address: str | None,
             as_json: bool) -> None:
    """Compile SPEC into a KFP v2 pipeline: one task per stage (train or tune, evaluate, register, promote),
    each calling genforge's Python API in the genforge image. Offline: nothing is submitted.

    \b
    Examples:
      genforge pipeline compile pipelines/quickstart.yaml --out quickstart.kfp.yaml
      genforge pipeline compile pipelines/quickstart.yaml --out q.yaml --set train.storage_path=/mnt/genforge/runs

    Upload the file in the Kubeflow UI (Pipelines > Upload pipeline) or with
    kfp.Client().create_run_from_pipeline_package(FILE, arguments={"overrides": ["train.epochs=30"]}).
    """
    from genforge.config import load_spec
    from pipelines.kubeflow import compile_pipeline, pipeline_name

    path = compile_pipeline(spec_path, out_path, overrides, image=image, ray_address=ray_address)
    spec = load_spec(spec_path, overrides)
    info = {"pipeline": pipeline_name(spec.name), "stages": list(spec.stages), "out": str(path.resolve())}
    emit(info, as_json, f"wrote pipeline {info['pipeline']} ({' -> '.join(info['stages'])}) to {path}")
