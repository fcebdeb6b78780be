"""The cluster's Ray Jobs API, as genforge uses it: connect with token authentication, probe capacity, submit,
follow, stop.

Token authentication (Ray 2.60's default for `ray start`) is resolved here rather than left to Ray's client,
which sends a token only when `RAY_AUTH_MODE=token` is set in the submitter's shell: the token comes from
`RAY_AUTH_TOKEN`, else the file `RAY_AUTH_TOKEN_PATH` names, else `~/.ray/auth_token` (Ray's own order), and is
sent as a bearer token when one exists. Every way the cluster can turn the submitter away before a job exists
(no answer, a missing or wrong token, not a Ray dashboard) is a SpecError: one line, exit 2.
"""

from __future__ import annotations

import json
import os
import shlex
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from genforge.errors import RunError, SpecError
from genforge.jobs.checks import Capacity

ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
_PROBE_MARK = "GENFORGE_CAPACITY "
PROBE_PREFIX = "genforge-probe-"
# Runs on the cluster as a tiny job: what the live nodes have, and what the autoscaler's node groups may add (Ray
# keeps that configuration in the GCS, which only a process inside the cluster can read). It imports only Ray (the
# cluster's genforge may differ from the submitter's); genforge.ray_runtime.cluster_capacity reads the same inside
# a job.
_PROBE = f"""
import json, ray
ray.init(logging_level="error", log_to_driver=False)
try:
    from ray._private.state import state
    most = state.get_max_resources_from_cluster_config()
except Exception:
    most = None
print({_PROBE_MARK!r} + json.dumps({{"current": ray.cluster_resources(), "autoscaler_max": most}}), flush=True)
"""


def resolve_address(address: str | None) -> str:
    """--address, else RAY_API_SERVER_ADDRESS, else an http(s) RAY_ADDRESS (the dashboard's URL)."""
    for candidate in (address, *(os.environ.get(k) for k in ADDRESS_ENV)):
        if candidate and candidate.startswith(("http://", "https://")):
            return candidate.rstrip("/")
        if candidate and address:
            raise SpecError(f"--address {address}: give the Ray dashboard's URL, e.g. http://HEAD:8265")
    raise SpecError("no Ray cluster given: pass --address http://HEAD:8265 (or set RAY_API_SERVER_ADDRESS)")


def auth_token() -> str | None:
    """The cluster token, looked up where Ray's own clients look for it."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def connect(address: str | None) -> Any:
    """A JobSubmissionClient for the cluster, or a one-line SpecError saying why there is none."""
    import requests
    from ray.job_submission import JobSubmissionClient

    address = resolve_address(address)
    token = auth_token()
    # Always our own header, empty without a token: Ray's client would otherwise add the token of whatever Ray this
    # process has initialised (a local one, started with its own token), and the cluster would see a wrong one.
    headers = {"Authorization": f"Bearer {token}" if token else ""}
    try:
        # The address is the dashboard's URL: never let Ray read it as "start a local cluster".
        return JobSubmissionClient(address, headers=headers)
    except requests.exceptions.RequestException as exc:
        raise SpecError(f"--address {address}: no Ray dashboard answers there ({type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001 - Ray raises bare ConnectionError/RuntimeError/AuthenticationError
        raise SpecError(_connect_error(address, exc, token)) from None


def _connect_error(address: str, exc: Exception, token: str | None) -> str:
    text = " ".join(str(exc).split())
    if "Authentication required" in text or "401" in text:
        return (f"the Ray cluster at {address} requires a token: set RAY_AUTH_TOKEN, or put the cluster's token in "
                "~/.ray/auth_token (RAY_AUTH_TOKEN_PATH)")
    if "Forbidden" in text or "403" in text or "invalid" in text.lower():
        return f"the Ray cluster at {address} refused the token{'' if token else ' (none was sent)'}"
    if "Failed to connect" in text or "onnection" in text:
        return f"--address {address}: no Ray dashboard answers there"
    return f"--address {address}: {text[:200]}"


def probe_capacity(client: Any, timeout_s: float = 120.0) -> Capacity:
    """Ask the cluster what it can provide, with a tiny job (`genforge-probe-*`) that reads its resources."""
    job = client.submit_job(entrypoint=f"python -c {shlex.quote(_PROBE)}", entrypoint_num_cpus=0,
                            submission_id=f"{PROBE_PREFIX}{uuid.uuid4().hex[:8]}", metadata={"genforge": "probe"})
    status = wait(client, job, timeout_s)
    logs = client.get_job_logs(job)
    if status not in TERMINAL:
        client.stop_job(job)
    # The probe is not deleted: Ray re-records a job deleted while its supervisor is still exiting as FAILED.
    # `genforge jobs list` leaves probes out; `ray job list` shows them as genforge-probe-*.
    for line in logs.splitlines():
        if line.startswith(_PROBE_MARK):
            found = json.loads(line[len(_PROBE_MARK) :])
            return Capacity({k: float(v) for k, v in found["current"].items()},
                            {k: float(v) for k, v in found["autoscaler_max"].items()} if found["autoscaler_max"]
                            else None)
    raise RunError(f"could not read the cluster's resources (probe job {job} ended {status}): {logs[-300:]}")


def wait(client: Any, job: str, timeout_s: float, poll_s: float = 0.5) -> str:
    """Poll until the job ends; its final status (or the last seen one at the deadline)."""
    deadline = time.monotonic() + timeout_s
    status = str(client.get_job_status(job))
    while status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(poll_s)
        status = str(client.get_job_status(job))
    return status


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended, and the exit code `genforge submit --follow` hands on."""

    submission_id: str
    status: str
    message: str | None
    driver_exit_code: int | None
    ray_job_id: str | None = None  # Ray's own id of the job (its actors and tasks carry it)

    @property
    def exit_code(self) -> int:
        if self.status == "SUCCEEDED":
            return 0
        if self.status == "STOPPED":
            return 130
        return self.driver_exit_code if self.driver_exit_code not in (None, 0) else 1

    def to_dict(self) -> dict[str, Any]:
        return {"submission_id": self.submission_id, "status": self.status, "message": self.message,
                "driver_exit_code": self.driver_exit_code, "exit_code": self.exit_code, "ray_job_id": self.ray_job_id}


def outcome(client: Any, job: str) -> JobOutcome:
    info = client.get_job_info(job)
    return JobOutcome(job, str(info.status), info.message, getattr(info, "driver_exit_code", None),
                      getattr(info, "job_id", None))


def follow(client: Any, job: str, echo: Callable[[str], None]) -> JobOutcome:
    """Stream the job's logs until it ends (Ctrl-C stops the job, then re-raises KeyboardInterrupt)."""
    import asyncio
    import logging

    logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)  # "WebSocket closed ..." at the end

    async def stream() -> None:
        async for chunk in client.tail_job_logs(job):
            for line in chunk.splitlines():
                echo(line)

    try:
        asyncio.run(stream())
    except KeyboardInterrupt:
        echo(f"[genforge] stopping job {job} ...")
        client.stop_job(job)
        wait(client, job, 60)
        raise
    wait(client, job, 60)  # the log stream ends a moment before the status turns final
    return outcome(client, job)


def job_rows(client: Any) -> Iterator[dict[str, Any]]:
    """Every job the cluster knows of, newest first, as plain data (probes left out)."""
    jobs = sorted(client.list_jobs(), key=lambda j: j.start_time or 0, reverse=True)
    for j in jobs:
        if (j.submission_id or "").startswith(PROBE_PREFIX):
            continue
        yield {"submission_id": j.submission_id, "status": str(j.status), "entrypoint": j.entrypoint,
               "start_time": j.start_time, "end_time": j.end_time, "message": j.message,
               "metadata": j.metadata or {}}
