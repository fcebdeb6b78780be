"""Pipeline specs: YAML validated into typed config, with `--set key=value` overrides.

Every section (data, model, train, tracking, evaluate, tune, register, promote) is a typed model that
rejects unknown keys, and every error names the key path, so a typo such as `model.latnt_dim` or a
misspelled `tune.metric` fails before Ray or MLflow are touched, not after training.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from genforge.errors import SpecError
from genforge.families import DIFFAUGMENT_POLICIES, FAMILIES, get_family_info
from genforge.names import check_alias, check_name

# Keys that may change when a run is continued: how long and where it trains and how it survives faults,
# never what it learns. They are tagged, not logged as params: MLflow refuses a param logged again with a
# different value.
RESUMABLE_KEYS = (
    "train.epochs", "train.max_failures", "train.workers", "train.cpus_per_worker", "train.use_gpu",
    "train.time_limit_s", "train.preempt_grace_s", "train.keep_checkpoints", "train.on_nonfinite",
    "train.max_rollbacks",
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class DataConfig(_Section):
    dataset: str = Field("mnist5k", description="Dataset registry name (see `genforge datasets`).")
    root: str | None = Field(None, description="Directory of torchvision datasets or the image folder.")
    download: bool = Field(False, description="Let torchvision download into `root` (needs a network).")
    image_size: int | None = Field(None, ge=4, description="Resize side for `imagefolder` (default 64).")
    channels: Literal[1, 3] | None = Field(None, description="1 (grey) or 3 (RGB) for `imagefolder`.")
    val_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="Share held out for validation.")
    test_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="Share held out for test (if no official split).")
    split_seed: int = Field(0, description="Seed of the deterministic train/val/test split.")
    streaming: bool = Field(
        False,
        description="`imagefolder` only: stream images through Ray Data (each rank reads its shard with "
        "ray.train.get_dataset_shard) instead of decoding the whole folder in every process; for folders that "
        "outgrow memory. `root` may then be a path or a URI pyarrow opens (s3://bucket/images).",
    )


class ModelConfig(_Section):
    family: str = Field("vae", description="Model family (see `genforge families`).")
    latent_dim: int = Field(32, ge=1, description="Size of z.")
    beta: float = Field(1.0, ge=0.0, description="KL weight of the VAE objective (beta-VAE).")
    width: int = Field(32, ge=4, description="Channels of the first conv layer; doubles per resolution.")
    likelihood: Literal["bernoulli", "gaussian", "laplace"] = Field(
        "bernoulli",
        description="VAE decoder likelihood: bernoulli (cross-entropy on binarised data), gaussian (MSE) or "
        "laplace (L1); the continuous ones are scored as discretised likelihoods of the 8-bit data.",
    )
    sampling_prior: Literal["expost", "standard"] = Field(
        "expost",
        description="VAE/cVAE samples: from Gaussians fitted to the training images' posterior means each epoch "
        "(expost, Ghosh et al. 2020: one per label for the cVAE, a mixture of prior_components for the VAE) or "
        "from N(0, I) (standard). Likelihoods always use N(0, I).",
    )
    prior_components: int = Field(20, ge=1, description="Gaussians in the VAE's ex-post sampling prior.")
    gan_loss: Literal["nonsaturating", "hinge"] = Field("nonsaturating", description="Adversarial loss.")
    ema_decay: float = Field(
        0.999, ge=0.0, lt=1.0, description="EMA of G weights used for sampling (the decay at full length)."
    )
    ema_rampup: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="EMA ramp-up (Karras et al. 2020/2022): the EMA half-life is capped at this share of the "
        "steps done, so early EMA follows G instead of holding its initial weights; 0 = constant ema_decay.",
    )
    spectral_norm: bool = Field(False, description="Spectral norm on D's layers (Miyato et al. 2018).")
    r1_gamma: float = Field(0.0, ge=0.0, description="R1 gradient penalty weight on real data; 0 = off.")
    diffaugment: str = Field("", description="DiffAugment policy, e.g. 'color,translation,cutout'.")
    class_loss_weight: float = Field(
        0.0, ge=0.0,
        description="cgan: weight of an auxiliary classifier's cross-entropy (AC-GAN, Odena et al. 2017) beside the "
        "projection: D learns real images' labels, G is trained to draw images D classifies as asked; 0 = off.",
    )

    @model_validator(mode="after")
    def _check_family_and_policy(self) -> "ModelConfig":
        if self.family not in FAMILIES:
            raise ValueError(f"family: unknown family {self.family!r} (choose from {', '.join(FAMILIES)})")
        if self.class_loss_weight > 0 and not get_family_info(self.family).auxiliary_classifier:
            raise ValueError(f"class_loss_weight: only conditional GANs have an auxiliary classifier "
                             f"(family is {self.family!r}; use 0)")
        unknown = [p for p in self.diffaugment.split(",") if p and p not in DIFFAUGMENT_POLICIES]
        if unknown:
            raise ValueError(f"diffaugment: unknown policy {unknown[0]!r} (use {', '.join(DIFFAUGMENT_POLICIES)})")
        return self

    @property
    def conditional(self) -> bool:
        return get_family_info(self.family).conditional


class TrainConfig(_Section):
    epochs: int = Field(10, ge=1, description="Total epochs; raise it and re-run to extend a run.")
    batch_size: int = Field(64, ge=1, description="Global batch; split evenly across workers.")
    lr: float = Field(1e-3, gt=0.0, description="Learning rate (G's for GANs).")
    lr_d: float | None = Field(None, gt=0.0, description="D's learning rate for GANs (default: lr).")
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = Field("adam", description="Optimizer (G's for GANs).")
    optimizer_d: Literal["adam", "adamw", "sgd", "rmsprop"] | None = Field(
        None, description="D's optimizer for GANs (default: optimizer)."
    )
    beta1: float | None = Field(
        None, ge=0.0, lt=1.0,
        description="Adam/AdamW beta1 (default: 0.5 for GANs as in DCGAN, 0.9 otherwise); "
        "decides whether a GAN trains.",
    )
    beta2: float = Field(0.999, gt=0.0, lt=1.0, description="Adam/AdamW beta2 (RMSprop's alpha).")
    beta1_d: float | None = Field(None, ge=0.0, lt=1.0, description="D's beta1 for GANs (default: beta1).")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="SGD/RMSprop momentum.")
    nesterov: bool = Field(False, description="Nesterov momentum (sgd with momentum > 0).")
    weight_decay: float = Field(0.0, ge=0.0, description="Weight decay (decoupled for adamw).")
    grad_clip: float | None = Field(None, gt=0.0, description="Clip the global gradient norm to this (None = off).")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="Learning-rate schedule over the run's steps (cosine decays to 0 at the last step)."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear learning-rate warm-up steps before the schedule.")
    workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel ranks).")
    cpus_per_worker: int = Field(
        1, ge=1, description="CPUs each worker reserves and uses as torch threads (on a 2-core machine one worker "
        "with 2 trains faster than two workers with 1: Ray's own processes take part of a core).",
    )
    use_gpu: bool = Field(False, description="One GPU per worker, bf16 autocast.")
    seed: int = Field(0, description="Seed of weights, noise and shuffling.")
    max_failures: int = Field(0, ge=-1, description="Worker-group restarts (Ray FailureConfig); -1 = forever.")
    checkpoint_every: int = Field(1, ge=1, description="Epochs between checkpoints (the last epoch always).")
    keep_checkpoints: int = Field(
        3, ge=1, description="Checkpoints kept on storage: the latest always, the rest the best by validation score."
    )
    storage_path: str | None = Field(
        None, description="Checkpoints and Ray results: a path or a URI pyarrow opens, e.g. s3://bucket/genforge "
        "(default: beside the tracking store)."
    )
    log_every_steps: int = Field(10, ge=1, description="Steps between per-step metric rows and progress lines.")
    on_nonfinite: Literal["skip", "rollback", "stop"] = Field(
        "skip",
        description="A non-finite loss or gradient: skip the step (up to max_nonfinite_steps), roll back to the last "
        "checkpoint with the learning rates halved (up to max_rollbacks), or stop the run (FAILED).",
    )
    max_nonfinite_steps: int = Field(20, ge=0, description="Skipped non-finite steps tolerated before the run fails.")
    max_rollbacks: int = Field(3, ge=0, description="Rollbacks tolerated (on_nonfinite: rollback) before it fails.")
    time_limit_s: float | None = Field(
        None, gt=0, description="Wall-clock budget: stop with a checkpoint after this long; re-run to continue."
    )
    preempt_grace_s: float = Field(
        25.0, gt=0, description="After SIGTERM (preemption, node drain): seconds allowed to write the checkpoint."
    )
    max_steps_per_epoch: int | None = Field(None, ge=1, description="Cap on steps per epoch (smoke tests).")

    @model_validator(mode="after")
    def _check_storage(self) -> "TrainConfig":
        # The URI is copied into params, run records and job listings: credentials belong in the environment.
        if self.storage_path and "://" in self.storage_path:
            from urllib.parse import parse_qs, urlsplit

            parts = urlsplit(self.storage_path)
            secret = {"access_key", "secret_key", "session_token"} & set(parse_qs(parts.query))
            if parts.password is not None or secret:
                what = ", ".join(sorted(secret)) or "a password"
                raise ValueError(f"storage_path: the URI carries a credential ({what}); give it to every node's "
                                 "environment instead (AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, ...)")
        return self

    @model_validator(mode="after")
    def _check_optimizer(self) -> "TrainConfig":
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise ValueError("nesterov: needs optimizer: sgd and momentum > 0")
        return self

    @model_validator(mode="after")
    def _check_batch(self) -> "TrainConfig":
        if self.batch_size < self.workers or self.batch_size % self.workers:
            raise ValueError(f"batch_size: {self.batch_size} must be >= workers ({self.workers}) and divisible by it")
        return self


class TrackingConfig(_Section):
    uri: str | None = Field(None, description="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db).")
    experiment: str | None = Field(None, description="Experiment name (default: the spec's name).")

    @model_validator(mode="after")
    def _check_experiment(self) -> "TrackingConfig":
        # An experiment's artifacts go to a folder named after it beside a local store: no paths, no '..'.
        if self.experiment is not None:
            _as_value_error(check_name, self.experiment, "experiment")
        return self


class EvaluateConfig(_Section):
    extractor: Literal["domain", "inception"] = Field("domain", description="Feature extractor for FID/KID/PR/DC.")
    samples: int = Field(10000, ge=10, description="Generated samples per draw.")
    seeds: int = Field(3, ge=1, description="Independent sample draws; FID and KID are mean +- std over them.")
    seed: int = Field(0, description="Seed of the first draw (draw i uses seed + i).")
    reference_split: Literal["train", "val", "test"] = Field(
        "train", description="Real images the fakes are compared with."
    )
    kid_subsets: int = Field(100, ge=1, description="KID subsets.")
    kid_subset_size: int = Field(1000, ge=2, description="KID subset size (capped by the sample counts).")
    iw_samples: int = Field(64, ge=1, description="k of the importance-weighted NLL bound (VAEs).")
    every_epochs: int | None = Field(None, ge=1, description="In-loop domain FID every N epochs (None = off).")
    inloop_samples: int = Field(2000, ge=10, description="Samples for the in-loop FID.")
    extractor_epochs: int = Field(10, ge=1, description="Training epochs of the domain classifier.")
    inception_weights: str | None = Field(
        None, description="Local FID Inception weights (or GENFORGE_INCEPTION_WEIGHTS)."
    )
    inception_sha256: str | None = Field(None, description="Override the published sha256 of the Inception weights.")


class SpaceEntry(_Section):
    """One searched key: exactly one of the distributions."""

    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    choice: list[Any] | None = None
    grid: list[Any] | None = None  # every value, tune.num_samples times each (random search only)

    @model_validator(mode="after")
    def _one(self) -> "SpaceEntry":
        given = [k for k in ("loguniform", "uniform", "choice", "grid") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of loguniform: [lo, hi], uniform: [lo, hi], choice: [...], grid: [...]")
        lo_hi = self.loguniform or self.uniform
        if lo_hi and not (lo_hi[0] < lo_hi[1] and (self.uniform or lo_hi[0] > 0)):
            raise ValueError(f"bounds {list(lo_hi)} must satisfy 0 < lo < hi (loguniform) or lo < hi (uniform)")
        if (self.choice is not None and not self.choice) or (self.grid is not None and not self.grid):
            raise ValueError("choice and grid need at least one value")
        return self


class TuneConfig(_Section):
    space: dict[str, SpaceEntry] | None = Field(None, description="Spec key -> distribution; default per family.")
    num_samples: int = Field(4, ge=1, description="Trials.")
    workers_per_trial: int = Field(1, ge=1, description="Ray Train workers of each trial.")
    max_concurrent_trials: int | None = Field(None, ge=1, description="Default: what the cluster's CPUs/GPUs allow.")
    max_epochs: int = Field(3, ge=1, description="Per-trial budget (ASHA may stop a trial earlier).")
    retrain_epochs: int | None = Field(
        None, ge=1,
        description="After the sweep, train the best trial's configuration from scratch for this many epochs as its "
        "own run (`{name}-{trial_id}-retrain`, nested under the sweep's parent run), which then goes on to evaluation "
        "and registration instead of the short trial; unset: the best trial itself goes on.",
    )
    search: Literal["optuna", "random"] = Field("optuna", description="Search algorithm (Optuna TPE or random).")
    scheduler: Literal["asha", "none"] = Field("asha", description="Early stopping.")
    grace_period: int = Field(1, ge=1, description="ASHA: epochs before a trial may be stopped.")
    reduction_factor: int = Field(2, ge=2, description="ASHA reduction factor.")
    metric: str | None = Field(None, description="Objective; default val_neg_elbo (VAEs) or inloop_fid (GANs).")
    mode: Literal["min", "max"] = Field("min", description="Minimise or maximise the objective.")
    seed: int = Field(0, description="Seed of the search algorithm.")

    @model_validator(mode="after")
    def _check_grid(self) -> "TuneConfig":
        grids = [k for k, e in (self.space or {}).items() if e.grid is not None]
        if grids and self.search != "random":
            raise ValueError(f"space: {grids[0]!r} is a grid, which needs search: random (Optuna samples, never grids)")
        return self

    @model_validator(mode="after")
    def _check_keys(self) -> "TuneConfig":
        for key in self.space or {}:
            section = key.split(".", 1)[0]
            if section not in ("model", "train") or key in RESUMABLE_KEYS:
                raise ValueError(
                    f"space: {key!r} cannot be searched "
                    f"(use model.* or train.* keys other than {', '.join(RESUMABLE_KEYS)})"
                )
        return self


class RegisterConfig(_Section):
    model_name: str | None = Field(None, description="Registered model name (default {dataset}-{family}).")

    @model_validator(mode="after")
    def _check_name(self) -> "RegisterConfig":
        if self.model_name is not None:
            _as_value_error(check_name, self.model_name, "model_name")
        return self


class PromoteConfig(_Section):
    alias: str = Field("champion", description="Alias to move.")
    metric: str = Field("fid", description="Version tag compared.")
    mode: Literal["min", "max"] | None = Field(
        None, description="Lower (min) or higher (max) is better; default: the metric's own direction."
    )
    min_improvement: float = Field(0.0, ge=0.0, description="Required margin beyond the measured noise.")
    gates: dict[str, str] = Field(
        default_factory=dict,
        description="Absolute requirements a candidate must meet to hold the alias, e.g. "
        "{fid_ratio: '<= 20', cond_accuracy_min: '>= 0.9'}; a failed gate leaves the version registered, unpromoted.",
    )

    @model_validator(mode="after")
    def _check_alias(self) -> "PromoteConfig":
        _as_value_error(check_alias, self.alias, "alias")
        return self

    @model_validator(mode="after")
    def _check_gates(self) -> "PromoteConfig":
        from genforge.model_registry.gates import parse_gate

        for key, condition in self.gates.items():
            try:
                parse_gate(f"{key}{condition}")
            except SpecError as exc:
                raise ValueError(f"gates.{key}: {exc}") from None
        return self


def _as_value_error(check, value: str, key: str) -> None:
    """Run a genforge.names check inside a validator: its message, with the key, becomes the spec error."""
    try:
        check(value, key)
    except SpecError as exc:
        raise ValueError(str(exc)) from None


class Spec(_Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="Run name; re-using it resumes.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    # The sections of the other stages; `genforge train` ignores them.
    tune: TuneConfig = Field(default_factory=TuneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    register_: RegisterConfig = Field(default_factory=RegisterConfig, alias="register")
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    stages: list[Literal["train", "tune", "evaluate", "register", "promote"]] = Field(
        default_factory=lambda: ["train", "evaluate", "register", "promote"],
        description="What `genforge run` does, in order (train or tune first).",
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, tree: Any) -> Any:
        """`evaluate:` with nothing under it (YAML null) means the defaults."""
        if isinstance(tree, dict):
            sections = ("data", "model", "train", "tracking", "evaluate", "tune", "register", "promote")
            return {k: ({} if v is None and k in sections else v) for k, v in tree.items()}
        return tree

    @model_validator(mode="after")
    def _check_cross(self) -> "Spec":
        if self.data.dataset != "imagefolder" and (self.data.image_size or self.data.channels):
            raise ValueError("data.image_size/data.channels apply to data.dataset=imagefolder only")
        if self.data.streaming and self.data.dataset != "imagefolder":
            raise ValueError("data.streaming: applies to data.dataset=imagefolder only "
                             "(the bundled sets fit in memory)")
        st = self.stages
        if "train" in st and "tune" in st:
            raise ValueError("stages: use train or tune, not both")
        if st and st[0] not in ("train", "tune") and any(s in st for s in ("evaluate", "register", "promote")):
            raise ValueError(f"stages: {st}: start with train or tune (later stages need its run)")
        if "promote" in st and "register" not in st[: st.index("promote")]:
            raise ValueError("stages: promote needs register before it")
        reported = get_family_info(self.model.family).training.epoch_metrics
        if self.tune.metric is not None and self.tune.metric not in reported:
            raise ValueError(
                f"tune.metric: {self.tune.metric!r} is not reported by {self.model.family} trials "
                f"(choose from {', '.join(reported)})"
            )
        return self

    @property
    def model_name(self) -> str:
        return self.register_.model_name or f"{self.data.dataset}-{self.model.family}"

    def training_dict(self) -> dict[str, Any]:
        """The sections training depends on, as plain JSON-able data."""
        return self.model_dump(mode="json", include={"name", "data", "model", "train", "tracking"})

    def fingerprint(self) -> str:
        """Hash of everything that may not change when a run resumes (where it is tracked is not part of it)."""
        flat = {
            k: v
            for k, v in flatten(self.training_dict()).items()
            if k not in RESUMABLE_KEYS and not k.startswith("tracking.")
        }
        return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:16]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one `key.path=value` override in place; the value is parsed as YAML (so 3 is an int)."""
    if "=" not in assignment:
        raise SpecError(f"--set {assignment!r}: expected KEY=VALUE, e.g. train.epochs=5")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise SpecError(f"--set {assignment!r}: empty key segment")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def _format_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    path = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key '{path}'"
    if first["type"] == "missing":
        return f"{source}: missing required key '{path}'"
    msg = first["msg"].removeprefix("Value error, ")
    field, sep, rest = msg.partition(": ")
    if sep and all(part.isidentifier() for part in field.split(".")):  # a check names its key: fold it into the path
        path, msg = (f"{path}.{field}" if path != "(top level)" else field), rest
    value = first.get("input")
    shown = "" if isinstance(value, dict) or value is None else f" (got {value!r})"
    return f"{source}: {path}: {msg}{shown}"


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Read, override and validate a spec; raises SpecError with a one-line message."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}: invalid YAML{where}") from None
    if not isinstance(tree, dict):
        raise SpecError(f"{path}: a spec is a mapping of sections, got {type(tree).__name__}")
    return spec_from_dict(tree, overrides, source=str(path))


def spec_from_dict(tree: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), source: str = "spec") -> Spec:
    tree = json.loads(json.dumps(tree, default=str))  # deep copy, YAML dates to strings
    for assignment in overrides:
        apply_override(tree, assignment)
    try:
        return Spec.model_validate(tree)
    except ValidationError as err:
        raise SpecError(_format_error(source, err)) from None
