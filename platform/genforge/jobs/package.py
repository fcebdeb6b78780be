"""What a submitted job carries: the submitter's genforge code and spec, in the job's runtime environment.

The cluster's image provides the heavy dependencies (torch, Ray, MLflow; the Dockerfile installs them from
constraints.txt). genforge's own packages travel as `py_modules`, which Ray uploads once per content hash and
puts first on the job's PYTHONPATH, so the job runs the submitter's version even where the image holds another;
the spec travels in the job's `working_dir`. The entrypoint is `python -m pipelines run SPEC --set ...` (or
train, tune): the overrides are re-applied on the cluster exactly as given, and the tracking URI is pinned to
the one checked here. The code's lineage (git commit, constraints hash) rides in the environment. Nothing
secret is put in any of them: Ray shows them verbatim to everyone who can list jobs.
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXCLUDES = ["__pycache__", "*.pyc", ".pytest_cache"]


@dataclass
class JobPackage:
    """A staged job: its entrypoint, runtime environment and metadata, and the temporary folder holding the spec
    (remove it with `cleanup()` once Ray has uploaded it)."""

    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str]
    staging: Path = field(repr=False)

    def cleanup(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def package_job(spec_path: Path, overrides: tuple[str, ...], modules: list[Path], metadata: dict[str, str],
                command: str = "run", extra_args: tuple[str, ...] = (), tracking_uri: str | None = None,
                stop_wait_s: float = 30.0) -> JobPackage:
    """Stage `spec_path` and describe a job running `genforge COMMAND` (run, train, tune) on it with the same
    overrides (and `extra_args`, e.g. --json).

    `modules` are the package directories to ship (genforge, evaluation, pipelines); `tracking_uri` is added as
    a final override when the submitter's environment, not the spec, supplied it. `stop_wait_s` is how long Ray
    waits after SIGTERM before it SIGKILLs a stopped job's driver (Ray's default, 3 s, is too short for the run to
    write its checkpoint: give it the spec's train.preempt_grace_s and a margin)."""
    staging = Path(tempfile.mkdtemp(prefix="genforge-job-"))
    shutil.copy2(spec_path, staging / spec_path.name)
    args = ["python", "-m", "pipelines", command, spec_path.name, *extra_args]
    for value in (*overrides, *((f"tracking.uri={tracking_uri}",) if tracking_uri else ())):
        args += ["--set", value]
    from genforge.tracking.lineage import code_facts

    runtime_env = {"working_dir": str(staging), "py_modules": [str(m) for m in modules], "excludes": EXCLUDES,
                   # lineage of the shipped code (which travels without its .git); the job supervisor's stop grace
                   "env_vars": {**code_facts(), "RAY_JOB_STOP_WAIT_TIME_S": str(int(stop_wait_s))}}
    return JobPackage(shlex.join(args), runtime_env, metadata, staging)
