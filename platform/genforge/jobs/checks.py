"""What a submitted job needs, checked before anything is submitted (each failure is a SpecError: exit 2).

A job runs on nodes that share neither the submitter's disk nor its loopback interface, and outlives the
submitter's terminal. So its tracking store must be a server every node can reach, its checkpoints must go to
storage that every node mounts and that outlives the Ray session, no secret may ride in the job (Ray shows a
job's entrypoint and runtime environment verbatim in `ray job list` and the dashboard), and the cluster must be
able to provide the workers the spec asks for, now or once its autoscaler has added nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from genforge.config import Spec
from genforge.errors import SpecError

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")
SERVER_HINT = ("start a team server instead, e.g. `mlflow server --host 0.0.0.0 --backend-store-uri "
               "postgresql://mlflow@DB:5432/mlflow --artifacts-destination s3://BUCKET/mlflow`, and pass "
               "--set tracking.uri=http://HOST:5000")


def is_loopback(host: str | None) -> bool:
    return (host or "").lower() in LOOPBACK_HOSTS or (host or "").startswith("127.")


def job_tracking_uri(spec: Spec, environment_uri: str | None, ray_address: str) -> str:
    """The tracking URI the job will use (the spec's, else the submitter's MLFLOW_TRACKING_URI), refused when
    the job's nodes could not reach it or it would carry a password into the job."""
    uri = spec.tracking.uri or environment_uri
    key = "tracking.uri" if spec.tracking.uri else "MLFLOW_TRACKING_URI"
    if not uri:
        raise SpecError(f"tracking.uri: unset, so the job would write to a SQLite file inside its own working "
                        f"directory, lost with it; {SERVER_HINT}")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("", "file", "sqlite") or len(scheme) == 1:  # a bare path (or a Windows drive letter)
        raise SpecError(f"{key}: {uri} is a local store that the cluster's nodes do not share; {SERVER_HINT}")
    if parts.password is not None:
        raise SpecError(f"{key}: the URI carries a password, which `ray job list` and the dashboard would show to "
                        "everyone on the cluster; give the cluster's nodes MLFLOW_TRACKING_USERNAME/"
                        "MLFLOW_TRACKING_PASSWORD (or PGPASSWORD) in their environment and drop it from the URI")
    if is_loopback(parts.hostname) and not is_loopback(urlsplit(ray_address).hostname):
        raise SpecError(f"{key}: {uri} names this machine's loopback address, which the cluster at {ray_address} "
                        "cannot reach; use the tracking server's address as the cluster sees it")
    return uri


def job_storage_path(spec: Spec) -> str:
    """`train.storage_path` must name storage that every node shares and that outlives the job: an absolute path
    (a mounted volume) or a URI that Ray Train accepts (s3://, gs://, ...)."""
    path = spec.train.storage_path
    if not path:
        raise SpecError("train.storage_path: unset, so checkpoints would land in the job's temporary working "
                        "directory and vanish with the Ray session (a re-submitted job could not resume); set it "
                        "to storage every node mounts, e.g. --set train.storage_path=/mnt/genforge")
    if "://" not in path and not PurePosixPath(path).is_absolute():
        raise SpecError(f"train.storage_path: {path!r} is relative to the job's temporary working directory; "
                        "give an absolute path that every node mounts")
    return path


def worker_resources(spec: Spec, workers: int = 1) -> dict[str, float]:
    """What `workers` training workers of the spec reserve together (one worker's: Ray Train's
    `resources_per_worker`): `train.cpus_per_worker` CPUs each, and a GPU each with `train.use_gpu`."""
    needed = {"CPU": float(workers * spec.train.cpus_per_worker)}
    if spec.train.use_gpu:
        needed["GPU"] = float(workers)
    return needed


def resources_needed(spec: Spec) -> dict[str, float]:
    """The most any one stage of the spec holds at once: the training run's workers, or one sweep trial's (a sweep
    with fewer resources runs fewer trials at a time, but needs at least one trial's worth)."""
    workers = spec.tune.workers_per_trial if "tune" in spec.stages else spec.train.workers
    if "train" in spec.stages:
        workers = max(workers, spec.train.workers)
    return worker_resources(spec, workers)


@dataclass(frozen=True)
class Capacity:
    """A cluster's resources: what its live nodes have now, and the most its autoscaler may bring (None when no
    autoscaler reports a configuration: then what exists now is all there will be)."""

    current: dict[str, float]
    autoscaler_max: dict[str, float] | None = None

    def most(self, resource: str) -> float:
        now = self.current.get(resource, 0.0)
        if self.autoscaler_max is None:
            return now
        return max(now, float(self.autoscaler_max.get(resource, 0.0)))


def check_capacity(needed: dict[str, float], capacity: Capacity, address: str) -> None:
    """Refuse a job the cluster can never run: Ray would otherwise leave it pending forever."""
    for resource, amount in sorted(needed.items()):
        most = capacity.most(resource)
        if amount > most:
            grows = ("" if capacity.autoscaler_max is None
                     else f" (its autoscaler may add up to {_fmt(capacity.autoscaler_max.get(resource, 0.0))})")
            key = ("train.use_gpu" if resource == "GPU"
                   else "train.workers (tune.workers_per_trial) x train.cpus_per_worker")
            raise SpecError(f"{key}: the job needs {_fmt(amount)} {resource}; the cluster at {address} has "
                            f"{_fmt(capacity.current.get(resource, 0.0))}{grows}, so it would wait forever")


def _fmt(value: float) -> str:
    return "unlimited" if math.isinf(value) or value >= 2**62 else f"{value:g}"
