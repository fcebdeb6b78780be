"""Ray glue shared by training and sweeps: starting or joining Ray, and keeping the console readable.

By default a genforge command shows genforge's own progress and nothing else: Ray does not forward
worker output to the driver (`log_to_driver=False`), and rank 0 of a training run sends its progress
lines to a small actor (`RunChannel`, which also carries the run's stop flag) that a thread on the
driver drains into `echo`, so the lines carry no `(RayTrainWorker pid=...)` prefix and `--json` keeps
them on stderr. With `GENFORGE_VERBOSE=1` (the CLI's `--verbose`) Ray's own output comes back:
forwarded worker logs, Ray Train's per-report lines, Tune's status table.

Where the noise comes from in Ray 2.60, and what is done about it when not verbose:
- `Token authentication is enabled for this Ray cluster`: `ray.init` says so (a WARNING) each time it
  starts a local cluster with its default, token authentication; that logger is raised to ERROR. The
  choice itself stays Ray's (`RAY_AUTH_MODE` still decides).
- `PreemptionWatcher ... constructor arguments in the object store`: an error-level line from Ray's
  C++ core in Train's controller, logged when it starts the node-drain watcher. A cluster we start
  ourselves is this one machine, with no node to drain: there the watcher is switched off
  (`RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0`). On a real cluster it stays on; its line goes to the
  session logs only.
- `Reporting training result ...`: an INFO line per report per rank from a Ray Train logger that
  is named after its file, so `LoggingConfig(log_level=...)` misses it; workers raise that logger
  to WARNING (`quiet_worker_logs`).
- Sweeps (tuning/sweep.py): Tune runs at `verbose=0` with its legacy output engine (2.60's default
  engine prints its experiment header even at 0), and Optuna's INFO lines are dropped.
- Left as is: `(raylet) WARNING: N PYTHON worker processes have been started ...`, which a sweep on
  a few cores can trigger (trial drivers, Train controllers and small actors are processes). The
  raylet sends it through the GCS error channel and Ray's driver prints it whatever `log_to_driver`
  says; Ray 2.60 has no setting for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

if TYPE_CHECKING:
    from genforge.config import Spec

TRIAL_DRIVER = "trial_driver"  # custom resource that Tune trial drivers hold instead of CPUs (see tuning)
VERBOSE_ENV = "GENFORGE_VERBOSE"
# Variables a Ray worker needs from the driver's environment (the runtime_env passes them to cluster nodes).
_FORWARDED_ENV = ("GENFORGE_CACHE", VERBOSE_ENV, "GENFORGE_FAULTS")

# Announces token authentication (Ray's safe default) at every local start, as a warning.
_AUTH_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"

T = TypeVar("T")


def verbose() -> bool:
    """True when Ray's own output should reach the console (`GENFORGE_VERBOSE=1`, set by `--verbose`)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


HEALTH_CHECK_INTERVAL_S = "0.5"


def ensure_ray(spec: Spec) -> None:
    """Start a local Ray, or join the one RAY_ADDRESS names, unless Ray is already initialised here
    (tests, Tune trial drivers); then check that the cluster can ever hold the spec's workers (their CPUs, and GPUs
    with train.use_gpu): Ray would otherwise leave the run waiting for them forever."""
    import ray

    # Ray Train V2 patches print() in workers to also go through its logger: every print would show
    # twice. Workers inherit this (and the runtime_env passes it to cluster workers).
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    # Ray Train's controller moves a run from one state to the next (workers up, running, finished, shut down) on
    # its health-check poll, 2 s by default: about 6 s of every run's end went to waiting for polls (measured on a
    # 12-step run: 6.2 s from the last epoch to the driver's return at 2 s, 0.7 s at 0.25 s). The controller reads
    # the variable from this process's environment when a run starts; a user's own setting wins.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", HEALTH_CHECK_INTERVAL_S)
    if not ray.is_initialized():
        _init_ray()
    from genforge.jobs.checks import check_capacity, worker_resources

    # An autoscaling cluster counts the nodes it may still add.
    check_capacity(worker_resources(spec, spec.train.workers), cluster_capacity(), "this Ray cluster")


def cluster_capacity() -> Any:
    """The connected cluster's resources now, and the most its autoscaler's node groups may bring (from the
    autoscaler's configuration in the GCS; None without an autoscaler). A `jobs.checks.Capacity`."""
    import ray

    from genforge.jobs.checks import Capacity

    try:
        from ray._private.state import state

        most = state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - a private API: without it, only what exists now counts
        most = None
    return Capacity({k: float(v) for k, v in ray.cluster_resources().items()},
                    {k: float(v) for k, v in most.items()} if most else None)


def _init_ray() -> None:
    import ray

    local = not os.environ.get("RAY_ADDRESS")  # RAY_ADDRESS (a cluster, `ray job submit`) is honoured by ray.init
    if local:
        # One machine has no node to drain: the preemption watcher would only print its error line.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        if not verbose():
            logging.getLogger(_AUTH_NOTICE_LOGGER).setLevel(logging.ERROR)
    env_vars = {"RAY_TRAIN_ENABLE_PRINT_PATCH": os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"]}
    env_vars.update({k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ})
    # The dashboard stays on: Train's placement-group cleaner queries actor state through it.
    kwargs = {"logging_level": "warning", "log_to_driver": verbose()}
    forwarded = {"runtime_env": {"env_vars": env_vars}}
    try:
        # A local cluster we start ourselves gets the custom resource Tune trial drivers hold. Its workers are
        # children of the raylet this process starts, so they inherit this environment: no runtime_env, which would
        # start every worker process (a run starts about ten) through Ray's runtime-env setup (~0.45 s each).
        ray.init(**kwargs, **({"resources": {TRIAL_DRIVER: 64}} if local else forwarded))
    except ValueError as exc:  # ray.init found an existing cluster: it takes no resources, and needs the variables
        if "existing cluster" not in str(exc):
            raise
        ray.init(**kwargs, **forwarded)


def run_on_ray(fn: Callable[[], T]) -> T:
    """Call fn(); if this call started Ray, shut it down after, which also flushes the forwarded worker
    logs so the result line really is the last line on stdout."""
    import ray

    started = not ray.is_initialized()
    try:
        return fn()
    finally:
        if started and ray.is_initialized():
            ray.shutdown()


def quiet_worker_logs(verbose_logs: bool) -> None:
    """In a Ray Train worker: drop Train's per-report INFO line unless the run is verbose.

    Its logger is `logging.getLogger(__file__)` of Train's execution context, a name outside `ray.train`
    that Train's own log-level filter never matches; the worker's root logger passes INFO to the console.
    """
    if verbose_logs:
        return
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: nothing to quieten
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def run_channel() -> Any:
    """A `RunChannel` actor: a run's progress relay and stop flag (the driver sets it on Ctrl-C; rank 0 polls it and
    the ranks agree on it at the next tick). A sweep's trials share one relay and each get a channel as their flag."""
    import ray

    @ray.remote(num_cpus=0)
    class RunChannel:
        """Between a run's driver and its rank 0: progress lines (held until the driver drains them, in the order
        they were sent) and the stop flag. Each actor is a process of its own, started at every run: one class
        serves both roles."""

        def __init__(self) -> None:
            self.lines: list[str] = []
            self.requested = False

        def put(self, line: str) -> None:
            self.lines.append(line)

        def drain(self) -> list[str]:
            lines, self.lines = self.lines, []
            return lines

        def ping(self) -> None:
            """Answered after every put sent before it: tasks from one caller run in order."""

        def request(self) -> None:
            self.requested = True

        def get(self) -> bool:
            return self.requested

    return RunChannel.remote()


@dataclass(frozen=True)
class Progress:
    """Where a training run's rank 0 sends its progress lines: a relay actor, or stdout without one.

    `label` names the run in a sweep's shared console; `ticks=False` keeps only the lines that are
    not periodic ticks (a summary per epoch, the resume note).
    """

    relay: Any = None
    label: str = ""
    ticks: bool = True

    def say(self, text: str, tick: bool = False) -> None:
        if tick and not self.ticks:
            return
        line = f"[genforge] {self.label}{text}"
        if self.relay is None:
            print(line, flush=True)
        else:
            self.relay.put.remote(line)  # fire and forget: rank 0 never waits on the console

    def flush(self) -> None:
        """Wait until every line said so far has reached the relay (before the worker exits)."""
        if self.relay is not None:
            import ray

            ray.get(self.relay.ping.remote(), timeout=30)

    def for_run(self, label: str, ticks: bool) -> "Progress":
        return replace(self, label=label, ticks=ticks)


@contextlib.contextmanager
def relayed_progress(echo: Callable[[str], None], interval_s: float = 0.25) -> Iterator[Progress]:
    """A relay actor, and a driver thread echoing what reaches it, for the duration of the block."""
    import ray

    relay = run_channel()
    done = threading.Event()

    def pump() -> None:
        for line in ray.get(relay.drain.remote(), timeout=60):
            echo(line)

    def loop() -> None:
        while not done.wait(interval_s):
            with contextlib.suppress(Exception):  # a slow or gone relay loses lines, never the run
                pump()

    thread = threading.Thread(target=loop, name="genforge-progress", daemon=True)
    thread.start()
    try:
        yield Progress(relay)
    finally:
        done.set()
        thread.join()
        with contextlib.suppress(Exception):
            pump()  # what arrived since the last poll
        ray.kill(relay)
