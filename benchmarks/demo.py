"""`make demo` stage by stage: `genforge run pipelines/quickstart.yaml --json` in a fresh directory with a fresh
extractor cache (what a first `make demo` pays), timed from the lines it prints.

Stages begin at genforge's `=== stage: NAME ===` lines. The tune stage is the sweep; when a line in it mentions a
retrain of the best configuration (`tune.retrain_epochs`), the stage is split there into `sweep` and `retrain`.
`startup` is the time before the first stage (interpreter, imports, spec, tracking store); the last stage ends at
its last `[genforge]` line, and `finish` (Ray shutdown, the summary) runs from there to the exit. The whole is the
command's wall time.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.report import Entry
from benchmarks.subproc import CliRun, run_genforge

FAMILY = "demo"
ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "pipelines" / "quickstart.yaml"
STAGE = re.compile(r"=== stage: (\w+) ===")
RETRAIN = re.compile(r"retrain", re.IGNORECASE)


@dataclass
class DemoContext:
    """What a later benchmark (the CLI evaluation) needs from the demo's run."""

    cwd: Path
    env: dict[str, str]
    run_id: str | None
    tracking_uri: str | None


def stage_times(run: CliRun) -> dict[str, float]:
    """Seconds per stage from the stage lines (the tune stage split at its first retrain line, if any)."""
    marks: list[tuple[str, float]] = []
    for t, text in run.lines:
        m = STAGE.search(text)
        if m:
            marks.append((m.group(1), t))
        elif marks and marks[-1][0] == "tune" and RETRAIN.search(text) and "retrain" not in dict(marks):
            marks.append(("retrain", t))
    times = {"startup": marks[0][1] if marks else run.wall_s}
    if not marks:
        return times
    # The last stage ends at its last genforge line (the promotion decision); the rest is shutting Ray down and
    # printing the summary.
    last = max((t for t, text in run.lines if t >= marks[-1][1] and text.startswith("[genforge]")),
               default=run.wall_s)
    for (name, start), (_, end) in zip(marks, marks[1:] + [("end", last)]):
        times["sweep" if name == "tune" else name] = end - start
    times["finish"] = run.wall_s - last
    return times


def run(timeout_s: float = 1200, extra_args: tuple[str, ...] = ()) -> tuple[list[Entry], DemoContext | None]:
    """Run the demo once; entries per stage and the whole (target: 5 minutes)."""
    tmp = Path(tempfile.mkdtemp(prefix="genforge-bench-demo-"))
    env = {"GENFORGE_CACHE": str(tmp / "cache")}
    result = run_genforge(["run", str(SPEC), "--json", *extra_args], cwd=tmp, env=env, timeout_s=timeout_s)
    times = stage_times(result)
    how = "in its own PID namespace (another Ray instance runs here)" if result.isolated else "as is"
    ok = result.returncode == 0
    status = "finished" if ok else ("timed out" if result.returncode is None else f"exit {result.returncode}")
    entries = [Entry("demo_total", result.wall_s if ok else None, "s", "<= 300", family=FAMILY, repeats=1,
                     note=f"`genforge run pipelines/quickstart.yaml`, fresh cache, {status}, run {how}"
                          + ("" if ok else f"; last lines: {result.tail(3)[:300]}"))]
    for name in ("startup", "sweep", "retrain", "evaluate", "register", "promote", "finish"):
        value = times.get(name)
        note = "" if value is not None else _absent_note(name, ok)
        entries.append(Entry(f"demo_stage_{name}", value, "s", family=FAMILY, repeats=1 if value else None,
                             note=note))
    return entries, _context(tmp, env, result)


def _absent_note(name: str, ok: bool) -> str:
    if name == "retrain":
        return "no retrain line in the tune stage: this genforge has no tune.retrain_epochs (or it is off)"
    return "stage not reached" if not ok else "stage not in the spec"


def _context(tmp: Path, env: dict[str, str], result: CliRun) -> DemoContext | None:
    data: dict[str, Any] = result.result or {}
    if not data.get("run_id"):
        return None
    return DemoContext(tmp, env, data.get("run_id"), data.get("tracking_uri"))
