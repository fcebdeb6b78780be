"""Submitting a spec as a Ray job: the checks, the capacity probe, the package and the submission, in one place
for `genforge submit` and for the Kubeflow components whose heavy step runs on the Ray cluster."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

from genforge.errors import RunError


def shipped_modules() -> list[Path]:
    """The package directories a job carries: genforge, evaluation and pipelines, as this machine has them."""
    import evaluation
    import genforge
    import pipelines

    return [Path(m.__file__).parent for m in (genforge, evaluation, pipelines)]


def submission_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:40] or "job"
    return f"genforge-{slug}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def submit_spec(spec_path: str | Path, overrides: Sequence[str], address: str | None, *, command: str = "run",
                extra_args: Sequence[str] = (), check_tracking: bool = True,
                say: Callable[[str], None] = print) -> tuple[Any, str]:
    """Check, probe and submit `genforge COMMAND SPEC --set ...` as a Ray job; (connected client, submission id).

    Everything that can be refused is refused before the submission, as a SpecError (exit 2)."""
    import genforge
    from genforge.config import load_spec
    from genforge.jobs import checks, client
    from genforge.jobs.package import package_job
    from genforge.tracking.uri import check_tracking_server

    spec = load_spec(spec_path, overrides)
    jobs = client.connect(address)
    address = jobs.get_address()
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    uri = checks.job_tracking_uri(spec, env_uri, address)
    checks.job_storage_path(spec)
    if check_tracking:
        check_tracking_server(uri)
    say(f"[genforge] checking what the cluster at {address} can provide ...")
    checks.check_capacity(checks.resources_needed(spec), client.probe_capacity(jobs), address)
    metadata = {"genforge": command, "genforge_version": genforge.__version__, "spec": spec.name}
    package = package_job(Path(spec_path), tuple(overrides), shipped_modules(), metadata, command=command,
                          extra_args=tuple(extra_args), tracking_uri=None if spec.tracking.uri else env_uri,
                          stop_wait_s=spec.train.preempt_grace_s + 10)
    try:
        job = jobs.submit_job(entrypoint=package.entrypoint, runtime_env=package.runtime_env,
                              metadata=package.metadata, submission_id=submission_id(spec.name))
    finally:
        package.cleanup()
    say(f"[genforge] submitted {job} to {address}: {package.entrypoint}")
    return jobs, job


def run_as_job(spec_text: str, overrides: Sequence[str], address: str, command: str,
               say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run `genforge COMMAND --json` on a spec (as text) as a Ray job, stream its logs, and return its JSON result
    (the last JSON line of its output); a job that does not succeed is a RunError naming it."""
    from genforge.jobs import client

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_text(spec_text)
        jobs, job = submit_spec(path, overrides, address, command=command, extra_args=("--json",), say=say)
    outcome = client.follow(jobs, job, say)
    if outcome.status != "SUCCEEDED":
        raise RunError(f"Ray job {job} ended {outcome.status}: {outcome.message}")
    for line in reversed(jobs.get_job_logs(job).splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RunError(f"Ray job {job} succeeded but printed no JSON result")
