"""`genforge submit` and `genforge jobs list|status|logs|stop`: pipelines as Ray jobs on a cluster."""

from __future__ import annotations

import json
import sys

import click

from pipelines.options import emit, json_option, spec_command

ADDRESS_HELP = "The Ray dashboard's URL, e.g. http://HEAD:8265 (default: RAY_API_SERVER_ADDRESS or RAY_ADDRESS)."
address_option = click.option("--address", metavar="URL", help=ADDRESS_HELP)


@click.command()
@spec_command
@address_option
@click.option("--follow", is_flag=True, help="Stream the job's logs and exit with its outcome (0, 1; 130 on Ctrl-C).")
@click.option("--skip-tracking-check", is_flag=True,
              help="Do not check from here that the tracking server answers (it may be reachable only in-cluster).")
def submit(spec_path: str, overrides: tuple[str, ...], address: str | None, follow: bool, skip_tracking_check: bool,
           as_json: bool) -> None:
    """Submit `genforge run SPEC` to a Ray cluster as a Ray job (the Ray Jobs API).

    The job runs this machine's genforge code and SPEC (shipped in its runtime environment) with the same --set
    overrides. Before anything is submitted: the cluster must answer and accept the token (RAY_AUTH_TOKEN or
    ~/.ray/auth_token), the tracking URI must be a server every node reaches (no SQLite file, no password in it),
    train.storage_path must be shared storage, and the cluster must be able to provide the workers.

    \b
    Examples:
      genforge submit pipelines/quickstart.yaml --address http://HEAD:8265 \\
          --set tracking.uri=http://mlflow:5000 --set train.storage_path=/mnt/genforge --follow
      genforge jobs logs SUBMISSION_ID --follow
    """
    from genforge.jobs import client
    from pipelines.submission import submit_spec

    say = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    jobs, job = submit_spec(spec_path, overrides, address, check_tracking=not skip_tracking_check, say=say)
    address = jobs.get_address()
    if not follow:
        say(f"Follow it:  genforge jobs logs {job} --address {address} --follow")
        emit({"submission_id": job, "address": address, "status": "PENDING"}, as_json, f"submission id: {job}")
        return
    result = client.follow(jobs, job, say)
    emit(result, as_json, f"job {job}: {result.status}" + (f" ({result.message})" if result.message else ""))
    sys.exit(result.exit_code)


@click.group()
def jobs() -> None:
    """List, inspect, follow and stop Ray jobs on a cluster (those `genforge submit` made, and others)."""


@jobs.command("list")
@address_option
@json_option
def list_jobs(address: str | None, as_json: bool) -> None:
    """The cluster's jobs, newest first."""
    from genforge.jobs import client

    rows = list(client.job_rows(client.connect(address)))
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    for r in rows:
        spec = r["metadata"].get("spec", "")
        click.echo(f"{r['submission_id'] or '-':52} {r['status']:10} {spec:20} {r['entrypoint'][:60]}")
    if not rows:
        click.echo("no jobs")


@jobs.command()
@click.argument("submission_id")
@address_option
@json_option
def status(submission_id: str, address: str | None, as_json: bool) -> None:
    """How a job stands (exit code 0 whatever its status; the JSON says it)."""
    from genforge.jobs import client

    result = client.outcome(_client_for(submission_id, address), submission_id)
    emit(result, as_json, f"{submission_id}: {result.status}" + (f" ({result.message})" if result.message else ""))


@jobs.command()
@click.argument("submission_id")
@address_option
@click.option("--follow", is_flag=True, help="Keep streaming until the job ends, then exit with its outcome.")
def logs(submission_id: str, address: str | None, follow: bool) -> None:
    """A job's logs (the driver's output: genforge's progress lines and the final summary)."""
    from genforge.jobs import client

    jobs_client = _client_for(submission_id, address)
    if not follow:
        click.echo(jobs_client.get_job_logs(submission_id), nl=False)
        return
    sys.exit(client.follow(jobs_client, submission_id, click.echo).exit_code)


@jobs.command()
@click.argument("submission_id")
@address_option
@json_option
def stop(submission_id: str, address: str | None, as_json: bool) -> None:
    """Stop a job (Ray sends its driver SIGTERM: the training run checkpoints and ends KILLED, resumable)."""
    from genforge.jobs import client

    jobs_client = _client_for(submission_id, address)
    jobs_client.stop_job(submission_id)
    client.wait(jobs_client, submission_id, 60)
    result = client.outcome(jobs_client, submission_id)
    emit(result, as_json, f"{submission_id}: {result.status}")


def _client_for(submission_id: str, address: str | None):
    """A connected client, after checking the job exists (an unknown id is bad input: exit 2)."""
    from genforge.errors import SpecError
    from genforge.jobs import client

    jobs_client = client.connect(address)
    try:
        jobs_client.get_job_info(submission_id)
    except RuntimeError as exc:
        if "does not exist" in str(exc) or "404" in str(exc):
            raise SpecError(f"no job {submission_id!r} on the cluster at {jobs_client.get_address()}") from None
        raise
    return jobs_client
