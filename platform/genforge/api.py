"""genforge's Python API: the functions behind every command, with typed arguments and dataclass results.

Each function returns the object the matching command prints with `--json` (its `to_dict()`), raises
`SpecError` for bad input and `RunError` for a failure after work started, and imports its heavy
libraries (torch, Ray, MLflow) only when called, so `import genforge` stays fast.

    import genforge
    run = genforge.train("pipelines/quickstart.yaml", ["train.epochs=5"])
    ev = genforge.evaluate(run.run_id, tracking_uri=run.tracking_uri)
    version = genforge.register(run.run_id, tracking_uri=run.tracking_uri)
    decision = genforge.promote(version.name, version=version.version, tracking_uri=run.tracking_uri)
    images = genforge.generate(f"models:/{version.name}@champion", 16).images
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:  # only for annotations: importing these costs torch, Ray or MLflow
    import torch

    from genforge.artifacts import LoadedModel
    from genforge.config import Spec
    from genforge.evaluator.run_evaluation import EvaluationResult
    from genforge.model_registry.gates import Gate
    from genforge.model_registry.promotion import Decision, Rollback
    from genforge.model_registry.versions import RegisteredVersion
    from genforge.training.driver import TrainResult
    from genforge.tuning.sweep import SweepResult

Echo = Callable[[str], None]


def as_spec(spec: "Spec | str | Path", overrides: Sequence[str] = ()) -> "Spec":
    """A validated Spec from a Spec (overrides applied to a copy) or a YAML path, its tracking URI free of
    credentials (they move to the client's environment variables) so no copy of the spec carries them, and its
    data.root absolute (Ray workers and Tune trials do not run in this working directory)."""
    from genforge.config import Spec, load_spec, spec_from_dict
    from genforge.tracking.credentials import adopt_credentials

    if isinstance(spec, Spec):
        spec = spec_from_dict(spec.model_dump(mode="json", by_alias=True), overrides) if overrides else spec
    else:
        spec = load_spec(spec, overrides)
    if spec.tracking.uri:
        spec.tracking.uri = adopt_credentials(spec.tracking.uri)
    if spec.data.root and "://" not in spec.data.root:  # workers and sweep trials run in other directories
        spec.data.root = str(Path(spec.data.root).expanduser().resolve())
    return spec


def _store(tracking_uri: str | None) -> str:
    """An absolute tracking URI of an existing store that answers (reading commands never create an empty one)."""
    from genforge.tracking.uri import check_tracking_server, require_existing_store, resolve_tracking_uri

    return check_tracking_server(require_existing_store(resolve_tracking_uri(tracking_uri)))


def _checked(spec: "Spec") -> "Spec":
    """A spec whose tracking server answers: checked before Ray starts or anything is written."""
    from genforge.tracking.uri import check_tracking_server, resolve_tracking_uri

    check_tracking_server(resolve_tracking_uri(spec.tracking.uri))
    return spec


def train(spec: "Spec | str | Path", overrides: Sequence[str] = (), *, echo: Echo = print) -> "TrainResult":
    """Train (or continue) the run the spec names with Ray Train; see `genforge train`."""
    from genforge.training.driver import train as run_training

    return run_training(_checked(as_spec(spec, overrides)), echo=echo)


def tune(spec: "Spec | str | Path", overrides: Sequence[str] = (), *, echo: Echo = print) -> "SweepResult":
    """Sweep the spec's `tune.space` with Ray Tune; see `genforge tune`."""
    from genforge.tuning.sweep import tune_sweep

    return tune_sweep(_checked(as_spec(spec, overrides)), echo=echo)


def evaluate(run_id: str | None = None, *, model_uri: str | None = None, overrides: Sequence[str] = (),
             tracking_uri: str | None = None, echo: Echo = print) -> "EvaluationResult":
    """Evaluate a run (or the run behind a model URI) and log the metrics to it; see `genforge evaluate`."""
    from genforge.errors import SpecError
    from genforge.evaluator.run_evaluation import evaluate_run

    if bool(run_id) == bool(model_uri):
        raise SpecError("give exactly one of --run RUN_ID or --model MODEL_URI")
    return evaluate_run(_store(tracking_uri), run_id, model_uri, list(overrides), echo=echo)


def register(run_id: str, *, name: str | None = None, overrides: Sequence[str] = (), tracking_uri: str | None = None,
             echo: Echo = print) -> "RegisteredVersion":
    """Register a run's model (evaluating it first if needed); see `genforge register`."""
    from genforge.model_registry.versions import register_run
    from genforge.names import check_name

    if name is not None:
        check_name(name, "--name")
    return register_run(_store(tracking_uri), run_id, name, list(overrides), echo=echo)


def promote(name: str, *, version: int | None = None, alias: str = "champion", metric: str = "fid",
            mode: str | None = None, min_improvement: float = 0.0, gates: "Sequence[str | Gate]" = (),
            tracking_uri: str | None = None) -> "Decision":
    """Move `alias` to `version` (default: the latest) only if it meets every gate (e.g. "fid_ratio<=20", see
    model_registry/gates.py) and beats the holder; see `genforge promote`. `mode` (min or max) defaults to the
    metric's known direction. A failed gate is a decision (`failed_gates`), not an error."""
    from genforge.model_registry.gates import parse_gate
    from genforge.model_registry.promotion import promote as decide
    from genforge.names import check_alias, check_name

    check_name(name, "MODEL_NAME")
    check_alias(alias)
    parsed = [g if not isinstance(g, str) else parse_gate(g) for g in gates]
    return decide(_store(tracking_uri), name, version, alias, metric, mode, min_improvement, gates=parsed)


def rollback(name: str, *, alias: str = "champion", metric: str = "fid", tracking_uri: str | None = None
             ) -> "Rollback":
    """Mark the alias holder rolled back and give the alias to the best version still eligible (normally the one
    the holder took it from); see `genforge rollback`."""
    from genforge.model_registry.promotion import rollback as restore
    from genforge.names import check_alias, check_name

    check_name(name, "MODEL_NAME")
    check_alias(alias)
    return restore(_store(tracking_uri), name, alias, metric)


def list_models(name: str | None = None, *, tracking_uri: str | None = None) -> "list[RegisteredVersion]":
    """Every version of every registered model (or of `name`); see `genforge models`."""
    from genforge.model_registry.versions import list_models as versions

    return versions(_store(tracking_uri), name)


def _model_run(model_uri: str, tracking_uri: str | None) -> tuple[str, str, str | None]:
    """(store URI, run id, platform artifact path or None) of a run id or a model URI."""
    from mlflow import MlflowClient

    from genforge.tracking.lookup import resolve

    uri = _store(tracking_uri)
    is_uri = model_uri.startswith(("runs:/", "models:/"))
    return (uri, *resolve(MlflowClient(uri), None if is_uri else model_uri, model_uri if is_uri else None))


def load_model(model_uri: str, *, tracking_uri: str | None = None, device: str = "cpu") -> "LoadedModel":
    """The platform model behind a run id or model URI (sha256-verified safetensors, no unpickling); a registered
    version loads exactly the weights it was registered with."""
    from genforge.tracking.loading import load_run_model

    store, run_id, artifact = _model_run(model_uri, tracking_uri)
    return load_run_model(store, run_id, device=device, artifact_path=artifact)


@dataclass
class Generated:
    """Images drawn by `generate`, with where they came from and, if written, the grid file."""

    model_uri: str
    run_id: str
    count: int
    seed: int
    label: int | None
    path: str | None
    images: "torch.Tensor"  # (count, C, H, W) in [0, 1]

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "images"}


def generate(model_uri: str, n: int = 64, *, label: int | None = None, seed: int = 0, out: str | Path | None = None,
             tracking_uri: str | None = None) -> Generated:
    """Draw n images from a model (one label, or all classes in turn for conditional models); write a grid to `out`."""
    import math

    import torch

    from genforge.errors import SpecError
    from genforge.images import save_grid
    from genforge.sampling import class_cycle
    from genforge.tracking.loading import load_run_model

    store, run_id, artifact = _model_run(model_uri, tracking_uri)
    model = load_run_model(store, run_id, artifact_path=artifact)
    labels = None
    if model.manifest["conditional"]:
        if label is not None and not 0 <= label < model.num_classes:
            raise SpecError(f"--label {label}: the model has classes 0..{model.num_classes - 1}")
        labels = torch.full((n,), label) if label is not None else class_cycle(n, model.num_classes)
    elif label is not None:
        raise SpecError(f"--label: {model_uri} is not a conditional model")
    images = model.generate(n, labels, seed=seed)
    path = str(save_grid(images, int(math.ceil(math.sqrt(n))), out)) if out else None
    return Generated(model_uri, run_id, n, seed, label, path, images)
