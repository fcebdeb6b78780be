"""Kubeflow Pipelines (KFP v2): a genforge spec compiled into a pipeline of lightweight Python components.

`genforge pipeline compile SPEC --out FILE.yaml` writes the spec's stages as one KFP task each, in the order
`genforge run` runs them: train (or tune) -> evaluate -> register -> promote. Each component is a plain
function below whose body imports genforge and makes the same Python API call `pipelines.pipeline` makes, so a
Kubeflow run and `genforge run` produce the same MLflow runs, versions and aliases. What one task hands the
next travels as KFP outputs: the MLflow run id and tracking URI, the registered model name and version, and
the promotion decision (promoted, reason, champion URI), which the pipeline also returns as its own outputs.

Why the spec travels as a string parameter (`spec_text`, the resolved spec as JSON, which is YAML too): the
components run in pods that do not have the compiling machine's files. The spec is validated when compiling
(a bad spec never becomes a pipeline) and again in every component, after the run-time `overrides` (a list of
`KEY=VALUE`, like `--set`) that the Kubeflow UI lets a user change per run.

Where the work runs. The components run in the genforge image (`--image`, default `GENFORGE_IMAGE`, else
`genforge:0.1.0`), which must contain kfp as well as genforge: its Dockerfile installs `.[server,kubeflow]`
(the components set `install_kfp_package=False`, since a pip install at run time would need a network and a
writable environment, and would not respect constraints.txt). On Kubeflow the heavy steps run on the Ray
cluster, not in the component pod: with `--ray-address http://genforge-head-svc.genforge.svc.cluster.local:8265`
(KUBERAY_HEAD, the Jobs API of `k8s/`'s RayCluster) the train/tune task gets GENFORGE_JOBS_ADDRESS and submits
`genforge train|tune SPEC --json` as a Ray job exactly as `genforge submit` does (same checks, same shipped code),
follows its logs into the pod's log and hands on the run id from the job's JSON result; the pod needs
`RAY_AUTH_TOKEN` from the Secret `genforge-ray-auth`, and the spec needs a shared `train.storage_path` and a
tracking server. A `ray://` address is set as RAY_ADDRESS instead (Ray Client; the driver then runs in the pod,
which must mount the shared volume), and without either a component starts a private Ray inside its own pod
(fine for small specs, and what the local runner does). Every pod needs the
tracking server: `MLFLOW_TRACKING_URI` (or `tracking.uri` in the spec) and `MLFLOW_TRACKING_USERNAME` /
`MLFLOW_TRACKING_PASSWORD` from `genforge-mlflow-client`. Secrets and volumes are attached with
kfp-kubernetes (`kubernetes.use_secret_as_env`, `kubernetes.mount_pvc` on the tasks of `build_pipeline`'s
result) or a Kubeflow PodDefault; a tracking URI with a password is refused here, because the compiled file
would carry it. Evaluation runs in its own pod (no Ray): give that task the CPU and memory it needs.

KFP's result cache is off for every task: genforge's stages are idempotent on their own (training resumes or
finds nothing to do, evaluation and registration are skipped when done, promotion re-checks the evidence),
and a cached promotion decision could be stale. A training run that stops early (train.time_limit_s,
preemption) fails its task with a message saying so, so later stages never see an unfinished model; running
the pipeline again continues the same MLflow run from its checkpoint.
"""

# No `from __future__ import annotations`: KFP reads the components' annotations (the NamedTuple outputs) as
# objects, and the component source it embeds is evaluated without this module's names.
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence
from urllib.parse import urlsplit

from genforge.errors import SpecError

DEFAULT_IMAGE = "genforge:0.1.0"
IMAGE_ENV = "GENFORGE_IMAGE"
KUBERAY_HEAD = "http://genforge-head-svc.genforge.svc.cluster.local:8265"  # the Jobs API of k8s/'s RayCluster


# --- Components. Each body runs in the component's pod, on its own: everything it uses is imported inside it
# (KFP copies the function's source into the pipeline, not this module).


def train(spec_text: str, overrides: list) -> NamedTuple("Outputs", [("run_id", str), ("tracking_uri", str)]):
    """Train (or continue) the spec's run with Ray Train: submitted as a Ray job to the cluster whose Jobs API
    GENFORGE_JOBS_ADDRESS names, else on the cluster RAY_ADDRESS names, else on a local Ray in this pod."""
    import os

    import yaml

    import genforge
    from genforge.config import spec_from_dict
    from genforge.errors import RunError
    from genforge.ray_runtime import run_on_ray

    spec = spec_from_dict(yaml.safe_load(spec_text), overrides)
    if os.environ.get("GENFORGE_JOBS_ADDRESS"):
        from pipelines.submission import run_as_job

        result = run_as_job(spec_text, overrides, os.environ["GENFORGE_JOBS_ADDRESS"], "train")
        status, run_id, uri, epochs = result["status"], result["run_id"], result["tracking_uri"], result["epochs"]
    else:
        local = run_on_ray(lambda: genforge.train(spec))
        status, run_id, uri, epochs = local.status, local.run_id, local.tracking_uri, local.epochs
    if status != "FINISHED":  # an unfinished model is never evaluated, registered or promoted
        raise RunError(f"training {status} at epoch {epochs} of {spec.train.epochs}; "
                       "run the pipeline again to continue the same run")
    return (run_id, uri)


def tune(spec_text: str, overrides: list) -> NamedTuple("Outputs", [("run_id", str), ("tracking_uri", str)]):
    """Sweep the spec's tune.space with Ray Tune (as a Ray job where GENFORGE_JOBS_ADDRESS is set, like train);
    the best run goes on to evaluation: the best trial's, or with tune.retrain_epochs the run that retrained its
    configuration."""
    import os

    import yaml

    import genforge
    from genforge.config import spec_from_dict
    from genforge.errors import RunError
    from genforge.ray_runtime import run_on_ray

    spec = spec_from_dict(yaml.safe_load(spec_text), overrides)
    if os.environ.get("GENFORGE_JOBS_ADDRESS"):
        from pipelines.submission import run_as_job

        sweep = run_as_job(spec_text, overrides, os.environ["GENFORGE_JOBS_ADDRESS"], "tune")
    else:
        sweep = run_on_ray(lambda: genforge.tune(spec)).to_dict()
    if not sweep["best_run_id"]:
        raise RunError(f"sweep {sweep['parent_run_id']}: no trial reported {sweep['metric']}")
    return (sweep["best_run_id"], sweep["tracking_uri"])


def evaluate(run_id: str, tracking_uri: str,
             force: bool) -> NamedTuple("Outputs", [("run_id", str), ("protocol", str)]):
    """Evaluate the run under the protocol of the spec it was trained with (its logged spec's `evaluate`
    section), unless it already is at its current weights (or force); hand the run on to registration."""
    from mlflow import MlflowClient

    import genforge
    from genforge.tracking.evaluation_logging import current_evaluation

    if force or current_evaluation(MlflowClient(tracking_uri).get_run(run_id)) is None:
        genforge.evaluate(run_id, tracking_uri=tracking_uri)
    else:
        print(f"[genforge] run {run_id} is already evaluated at its current weights (force to evaluate again)")
    protocol = MlflowClient(tracking_uri).get_run(run_id).data.tags.get("genforge.eval.protocol_name", "")
    return (run_id, protocol)


def register(spec_text: str, overrides: list, run_id: str,
             tracking_uri: str) -> NamedTuple("Outputs", [("model_name", str), ("version", int), ("model_uri", str)]):
    """Register the run's model under the spec's register.model_name (evaluating it first if needed)."""
    import yaml

    import genforge
    from genforge.config import spec_from_dict

    spec = spec_from_dict(yaml.safe_load(spec_text), overrides)
    version = genforge.register(run_id, name=spec.model_name, tracking_uri=tracking_uri)
    return (version.name, version.version, version.uri)


def promote(spec_text: str, overrides: list, model_name: str, version: int, tracking_uri: str
            ) -> NamedTuple("Outputs", [("promoted", bool), ("reason", str), ("champion_uri", str)]):
    """Move the spec's alias to this version only if it meets the spec's gates and beats the holder under the same
    protocol."""
    import yaml

    import genforge
    from genforge.config import spec_from_dict
    from genforge.model_registry.gates import gates_from_mapping

    p = spec_from_dict(yaml.safe_load(spec_text), overrides).promote
    d = genforge.promote(model_name, version=version, alias=p.alias, metric=p.metric, mode=p.mode,
                         min_improvement=p.min_improvement, gates=gates_from_mapping(p.gates),
                         tracking_uri=tracking_uri)
    print(f"[genforge] {'PROMOTED' if d.promoted else 'not promoted'}: {d.reason}")
    return (d.promoted, d.reason, f"models:/{d.name}@{d.alias}" if d.holds_alias else "")


COMPONENTS: dict[str, Callable] = {"train": train, "tune": tune, "evaluate": evaluate, "register": register,
                                   "promote": promote}
# What each stage's task hands on. A later task's output replaces an earlier one of the same name (evaluate's
# run_id: registration waits for evaluation); the pipeline returns the last of each.
OUTPUTS: dict[str, list[tuple[str, type]]] = {
    "train": [("run_id", str), ("tracking_uri", str)],
    "tune": [("run_id", str), ("tracking_uri", str)],
    "evaluate": [("run_id", str), ("protocol", str)],
    "register": [("model_name", str), ("version", int), ("model_uri", str)],
    "promote": [("promoted", bool), ("reason", str), ("champion_uri", str)],
}


def _kfp() -> Any:
    """The kfp package, or the one-line SpecError that says how to get it (it is an optional extra)."""
    try:
        import kfp.compiler
        import kfp.dsl
    except ImportError:
        raise SpecError("Kubeflow Pipelines support needs kfp: pip install 'genforge[kubeflow]'") from None
    return kfp


def _spec(spec: Any, overrides: Sequence[str]) -> Any:
    """A validated Spec from a Spec, a spec dict or a YAML path, checked for what cannot go into a compiled pipeline."""
    from genforge.config import Spec, load_spec, spec_from_dict

    if isinstance(spec, (Spec, dict)):
        tree = spec.model_dump(mode="json", by_alias=True, exclude_unset=True) if isinstance(spec, Spec) else spec
        spec = spec_from_dict(tree, overrides)
    else:
        spec = load_spec(spec, overrides)
    if not spec.stages:
        raise SpecError("stages: empty; a pipeline needs train or tune first")
    if spec.tracking.uri and urlsplit(spec.tracking.uri).password is not None:
        raise SpecError("tracking.uri: carries a password, which the compiled pipeline would hold in clear; give "
                        "the pods MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD from a Secret instead")
    return spec


def pipeline_name(spec_name: str) -> str:
    """KFP names are lower-case DNS labels; spec names may hold capitals, dots and underscores."""
    return "genforge-" + re.sub(r"[^a-z0-9-]+", "-", spec_name.lower()).strip("-")


def build_pipeline(spec: Any, overrides: Sequence[str] = (), *, image: str | None = None,
                   ray_address: str | None = None) -> Callable:
    """The KFP pipeline function of a spec (a Spec, a spec dict or a YAML path) with `overrides` applied.

    Its parameters are `spec_text` (default: the resolved spec), `overrides` (run-time KEY=VALUE list) and
    `force_evaluate`; its outputs are those of its last tasks (see OUTPUTS). `image` defaults to GENFORGE_IMAGE,
    else genforge:0.1.0; `ray_address` (e.g. KUBERAY_HEAD) is where the train/tune task runs its work: a Jobs API URL
    (GENFORGE_JOBS_ADDRESS: submitted as a Ray job) or a ray:// address (RAY_ADDRESS: Ray Client)."""
    kfp = _kfp()
    dsl = kfp.dsl
    spec = _spec(spec, overrides)
    image = image or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
    ops = {stage: dsl.component(COMPONENTS[stage], base_image=image, install_kfp_package=False)
           for stage in spec.stages}
    stages = list(spec.stages)
    returned = {name: kind for stage in stages for name, kind in OUTPUTS[stage]}
    # The keys the spec file and overrides set, not every default: readable in the Kubeflow UI, and the driver
    # still logs the whole resolved spec with the run.
    default_text = json.dumps(spec.model_dump(mode="json", by_alias=True, exclude_unset=True))

    def genforge_pipeline(spec_text: str = default_text, overrides: list = [],  # noqa: B006 (KFP reads defaults)
                          force_evaluate: bool = False):
        outputs: dict[str, Any] = {}
        for stage in stages:
            if stage == stages[0]:
                kwargs: dict[str, Any] = {"spec_text": spec_text, "overrides": overrides}
            elif stage == "evaluate":
                kwargs = {"run_id": outputs["run_id"], "tracking_uri": outputs["tracking_uri"], "force": force_evaluate}
            elif stage == "register":
                kwargs = {"spec_text": spec_text, "overrides": overrides, "run_id": outputs["run_id"],
                          "tracking_uri": outputs["tracking_uri"]}
            else:  # promote: the registered version, not the run
                kwargs = {"spec_text": spec_text, "overrides": overrides, "model_name": outputs["model_name"],
                          "version": outputs["version"], "tracking_uri": outputs["tracking_uri"]}
            task = ops[stage](**kwargs).set_caching_options(False).set_display_name(stage)
            task.set_env_variable("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # bars would flood the pod log
            if stage in ("train", "tune") and ray_address:  # the Jobs API (http) or Ray Client (ray://)
                jobs_api = ray_address.startswith(("http://", "https://"))
                task.set_env_variable("GENFORGE_JOBS_ADDRESS" if jobs_api else "RAY_ADDRESS", ray_address)
            outputs.update({name: task.outputs[name] for name, _ in OUTPUTS[stage]})
        return genforge_pipeline.__annotations__["return"](*(outputs[name] for name in returned))

    genforge_pipeline.__annotations__["return"] = NamedTuple("Outputs", list(returned.items()))
    description = f"genforge spec {spec.name}: {' -> '.join(stages)} (model {spec.model.family} on {spec.data.dataset})"
    return dsl.pipeline(name=pipeline_name(spec.name), description=description)(genforge_pipeline)


def compile_pipeline(spec_path: str | Path, out_path: str | Path, overrides: Sequence[str] = (), *,
                     image: str | None = None, ray_address: str | None = None) -> Path:
    """Compile the spec's pipeline to a KFP v2 YAML file, offline; returns its path.

    Written to a temporary name and renamed, so a failed compile never leaves a half-written file behind."""
    out = Path(out_path)
    if out.suffix not in (".yaml", ".yml"):
        raise SpecError(f"--out {out}: a KFP pipeline file ends in .yaml or .yml")
    if not out.parent.is_dir():
        raise SpecError(f"--out {out}: directory {out.parent} does not exist")
    pipeline = build_pipeline(spec_path, overrides, image=image, ray_address=ray_address)
    tmp = out.with_name(f".{out.name}.tmp.yaml")
    try:
        _kfp().compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
