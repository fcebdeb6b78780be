"""Running a `genforge` command as a user would, with a timestamp on every output line.

Ray 2.60's Train placement-group cleaner looks its cluster up without an address; with a second Ray instance on
the machine (another user's run) the lookup fails ("Found multiple active Ray instances"), the cleaner dies and a
sweep's later trials wait for CPUs forever. So when another Ray instance is running, the command runs in its own
PID namespace (`unshare --pid --fork --mount-proc`, where available), in which Ray sees only its own processes; the
result records that it did.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GENFORGE = Path(sys.executable).with_name("genforge")


@dataclass
class CliRun:
    args: list[str]
    returncode: int | None  # None: killed at the timeout
    wall_s: float
    lines: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, line)
    result: dict[str, Any] | None = None  # the --json line, if any
    isolated: bool = False

    def tail(self, n: int = 5) -> str:
        return " / ".join(text for _, text in self.lines[-n:])


def other_ray_instances() -> list[int]:
    """Pids of running Ray GCS servers (one per Ray instance on this machine)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if cmd.endswith(b"gcs_server"):
            pids.append(int(entry.name))
    return pids


def _can_isolate() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    return probe.returncode == 0


def run_genforge(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout_s: float = 1800,
                 isolate: bool | None = None) -> CliRun:
    """Run `genforge ARGS` in cwd; stdout and stderr merged, each line stamped when it arrives. The last line that
    parses as a JSON object is the result (`--json`)."""
    if isolate is None:
        isolate = bool(other_ray_instances()) and _can_isolate()
    command = [str(GENFORGE), *args]
    if isolate:
        command = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", *command]
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append((time.perf_counter() - t0, line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code: int | None = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.terminate()  # genforge checkpoints and stops on SIGTERM
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        code = None
    wall = time.perf_counter() - t0
    reader.join(timeout=10)
    return CliRun(args, code, wall, lines, _last_json(lines), isolate)


def _last_json(lines: list[tuple[float, str]]) -> dict[str, Any] | None:
    for _, text in reversed(lines):
        text = text.strip()
        if text.startswith("{") and text.endswith("}"):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                continue
    return None
