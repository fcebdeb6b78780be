"""The results file and its table: `benchmarks/results/latest.json` and `latest.md`.

latest.json is {"machine": {...}, "runs": {family: {...}}, "entries": [...]}: each entry is
{"name", "value", "unit", "target", "met"} plus its family, the spread of its repeats and a note. A target is a
string "<op> <number>" (">= 5", "<= 1e-9"); `met` is null where there is no target or no value (a missing metric,
"no GPU"). A run of some families replaces their entries and keeps the others, so `make bench` and
`make bench-quality` write one file between them.
"""

from __future__ import annotations

import json
import math
import operator
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclass
class Entry:
    """One measured figure. `value` None means it could not be measured here (the note says why)."""

    name: str
    value: float | None
    unit: str
    target: str | None = None
    met: bool | None = None
    family: str = ""
    spread: dict[str, float] | None = None  # of the repeats: quartiles and range, or a ratio's low/high
    repeats: int | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.value is not None and not math.isfinite(self.value):
            self.value, self.note = None, (self.note + " (not finite)").strip()
        self.met = meets(self.value, self.target)


def meets(value: float | None, target: str | None) -> bool | None:
    """Whether `value` satisfies `target` ("<op> <number>"); None without a target or a value."""
    if target is None or value is None:
        return None
    op, number = target.split()
    return bool(_OPS[op](value, float(number)))


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU model and cores, memory, library versions and the GPU (if torch sees one)."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    for dist in ("torch", "ray", "mlflow", "numpy", "scipy", "torchmetrics", "prdc", "genforge"):
        info[dist] = _version(dist)
    info["gpu"] = _gpu_name()
    return info


def _gpu_name() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))


def _format(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    if abs(value) < 1e-3 or abs(value) >= 1e6:
        return f"{value:.2e}"
    return f"{value:.4g}"


def _spread_text(e: Entry) -> str:
    s = e.spread or {}
    if "low" in s:
        text = f"{_format(s['low'])} .. {_format(s['high'])}"
    elif "q1" in s and (e.repeats or 0) > 1:
        text = f"IQR {_format(s['q1'])} .. {_format(s['q3'])}"
    else:
        text = ""
    return " ".join(p for p in (text, f"(n={e.repeats})" if e.repeats else "") if p)


def verdict(e: Entry) -> str:
    return {True: "yes", False: "**MISSED**", None: "-"}[e.met]


def markdown(entries: list[Entry], machine: dict[str, Any], title: str = "genforge benchmarks") -> str:
    """The table the README's Performance section quotes, with the machine it was measured on."""
    gpu = machine.get("gpu") or "no GPU"
    lines = [
        f"# {title}",
        "",
        f"Measured {machine.get('measured', '')} on {machine.get('cpu')} ({machine.get('cores')} cores, {gpu}); "
        f"torch {machine.get('torch')}, ray {machine.get('ray')}, mlflow {machine.get('mlflow')}. "
        "Ratios are medians of per-repeat ratios within one run; the spread is the IQR, or low .. high.",
        "",
        "| benchmark | value | unit | target | met | spread | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        note = e.note.replace("|", "\\|")
        lines.append(f"| {e.name} | {_format(e.value)} | {e.unit} | {e.target or ''} | {verdict(e)} | "
                     f"{_spread_text(e)} | {note} |")
    return "\n".join(lines) + "\n"


def print_table(entries: list[Entry]) -> None:
    """The console table: a figure below its target is marked MISSED."""
    width = max([len(e.name) for e in entries] + [10])
    for e in entries:
        mark = {True: "ok", False: "MISSED", None: ""}[e.met]
        target = f"(target {e.target})" if e.target else ""
        print(f"  {e.name:<{width}} {_format(e.value):>10} {e.unit:<10} {target:<18} {mark}")


def _entry(stored: dict[str, Any]) -> Entry:
    """An entry read back, with its stored verdict (a quick run leaves speed targets unjudged)."""
    e = Entry(**{k: v for k, v in stored.items() if k != "met"})
    e.met = stored.get("met")
    return e


def load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"machine": {}, "runs": {}, "entries": []}
    return json.loads(path.read_text())


def write(entries: list[Entry], families: list[str], out_dir: Path = RESULTS, *, mode: str = "full",
          durations: dict[str, float] | None = None, details: dict[str, str] | None = None) -> dict[str, Any]:
    """Merge this run's entries into out_dir/latest.json (replacing the families it ran), write latest.md.
    `details` (family -> markdown) are printed below the table, e.g. where the training time goes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "latest.json"
    previous = load(path)
    machine = {**machine_info(), "measured": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    kept = [e for e in previous.get("entries", []) if e.get("family") not in families]
    runs = {k: v for k, v in previous.get("runs", {}).items() if k not in families}
    extra = {k: v for k, v in previous.get("details", {}).items() if k not in families}
    for family in families:
        runs[family] = {"measured": machine["measured"], "mode": mode, "duration_s": (durations or {}).get(family)}
    extra.update(details or {})
    doc = {"machine": machine, "runs": runs, "entries": kept + [asdict(e) for e in entries], "details": extra}
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    all_entries = [_entry(e) for e in doc["entries"]]
    text = markdown(all_entries, machine)
    for family, block in extra.items():
        text += f"\n## {family}\n\n{block}"
    (out_dir / "latest.md").write_text(text)
    return doc
