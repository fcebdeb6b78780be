"""A real two-node Ray cluster on one machine for tests: `ray start --head` with token authentication and a second
`ray start --address` joining it, each `--block`ed in its own process group on its own free ports and temp folder,
so a test can kill one node (SIGKILL to its group) and stop everything without touching other Ray instances on
the machine (`ray stop` would stop them all).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mlflow_server import free_port

_PORT_FLAGS = ("--node-manager-port", "--object-manager-port", "--runtime-env-agent-port",
               "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port", "--metrics-export-port")


def _ports() -> list[str]:
    args = []
    for flag in _PORT_FLAGS:
        args += [flag, str(free_port())]
    return args  # worker processes take free ports from Ray's own range


class RayNode:
    """One `ray start --block` process group."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        ray = str(Path(sys.executable).with_name("ray"))
        self.proc = subprocess.Popen([ray, "start", "--block", "--disable-usage-stats", *args, *_ports()], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL the node and everything it started: a lost machine, as the cluster sees it. The raylet puts each
        worker process in a process group of its own (a worker outlives its raylet by up to a second of parent
        checks, time enough for a tiny run to train on), so the whole session goes, not only the group."""
        for pid in self._session():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM (a node drains, up to 30 s by default: more than a test needs), then SIGKILL after `grace_s`."""
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
        self._signal(signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def _session(self) -> list[int]:
        """Every process of the node's session (`start_new_session` made `ray start` its leader)."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session
            except OSError:
                continue
            if int(fields[3]) == self.proc.pid:
                pids.append(int(stat.parent.name))
        return pids

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


class RayCluster:
    """Head (token auth, `head_cpus` CPUs, the `trial_driver` resource) plus one worker node (`worker_cpus`)."""

    def __init__(self, root: Path, head_cpus: int = 1, worker_cpus: int = 1, extra_env: dict[str, str] | None = None):
        self.root = root
        # Ray's socket paths must fit in 107 bytes: its temp folders live under a short /tmp name, not pytest's.
        self.temp = Path(tempfile.mkdtemp(prefix="gf-ray-", dir="/tmp"))
        self.token = secrets.token_hex(16)
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.gcs_address = f"127.0.0.1:{self.gcs_port}"
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": self.token, "RAY_TRAIN_ENABLE_PRINT_PATCH": "0", **(extra_env or {})}
        for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
            self.env.pop(key, None)
        self.head = RayNode(["--head", "--port", str(self.gcs_port), "--dashboard-host", "127.0.0.1",
                             "--dashboard-port", str(self.dashboard_port), "--num-cpus", str(head_cpus),
                             "--num-gpus", "0", "--resources", json.dumps({"trial_driver": 8}),
                             "--temp-dir", str(self.temp / "head"), "--ray-client-server-port", str(free_port())],
                            self.env, root / "head.log")
        self._wait(lambda: self.cpus() >= head_cpus, 120, "the head's dashboard and raylet")
        self.worker = self.add_worker(worker_cpus)

    def add_worker(self, cpus: int) -> RayNode:
        """Join a worker node and wait until the cluster lists it alive (a killed node may still be listed alive
        for a while, so a new node is told apart by its id, not by a count)."""
        known = set(self.alive_nodes())
        n = len(list(self.root.glob("worker*.log")))
        node = RayNode(["--address", self.gcs_address, "--num-cpus", str(cpus), "--num-gpus", "0",
                        "--temp-dir", str(self.temp / f"w{n}")], self.env, self.root / f"worker{n}.log")
        self._wait(lambda: set(self.alive_nodes()) - known, 120, "the worker node to join")
        return node

    def alive_nodes(self) -> dict[str, float]:
        """Alive nodes' ids and CPUs, from the dashboard's node list."""
        request = urllib.request.Request(f"{self.address}/nodes?view=summary",
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=5) as r:
            nodes = json.load(r)["data"]["summary"]
        return {n["raylet"]["nodeId"]: n["raylet"]["resourcesTotal"].get("CPU", 0) for n in nodes
                if n["raylet"]["state"] == "ALIVE"}

    def cpus(self) -> float:
        return sum(self.alive_nodes().values())

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.head.proc.poll() is not None:
                raise RuntimeError(f"ray head exited; see {self.head.log_path}")
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(1)
        raise RuntimeError(f"timed out waiting for {what}; see {self.root}")

    def stop(self) -> None:
        nodes = [n for n in (getattr(self, "worker", None), self.head) if n is not None]
        for node in nodes:  # all at once: each drains in parallel
            node._signal(signal.SIGTERM)
        for node in nodes:
            node.stop(grace_s=3.0)
        shutil.rmtree(self.temp, ignore_errors=True)
