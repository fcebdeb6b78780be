"""Fault injection for the reliability tests: real signals and errors at a chosen rank and step.

Chaos testing needs the fault at a known place, mid-epoch on rank 1 say, which a test outside the worker
processes cannot aim at. `GENFORGE_FAULTS` holds `;`-separated rules `ACTION@COND,COND,...`:

- ACTION: `sigkill` / `sigterm` (the worker sends the signal to its own process: the real thing, not an
  exception), `raise` (a RuntimeError in the training function) or `nan` (the batch becomes NaN, so loss and
  gradients are non-finite on every rank after DDP's all-reduce).
- COND: `rank=R` (default 0), `step=S` (fires once the rank's optimizer step reaches S), `lr=X` (only in runs
  whose `train.lr` is X, to single out one sweep trial).

Each rule fires once per run directory: the first process to create its marker file (`O_EXCL`) acts, so a
restarted worker group does not meet the same fault again, as a real crash would not repeat. The driver
forwards the variable to its workers and to sweep trials; unset, nothing here runs.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

ENV = "GENFORGE_FAULTS"
ACTIONS = ("sigkill", "sigterm", "raise", "nan")
MARKERS = ".faults"  # in the run directory


@dataclass(frozen=True)
class Rule:
    index: int
    action: str
    rank: int = 0
    step: int = 1
    lr: float | None = None


def parse(text: str | None) -> list[Rule]:
    """The rules of a GENFORGE_FAULTS value; a malformed rule is an error, never silently ignored."""
    rules = []
    for index, part in enumerate(p.strip() for p in (text or "").split(";")):
        if not part:
            continue
        action, _, conds = part.partition("@")
        if action not in ACTIONS:
            raise ValueError(f"{ENV}: unknown action {action!r} in {part!r} (use {', '.join(ACTIONS)})")
        kwargs: dict[str, float | int] = {}
        for cond in filter(None, conds.split(",")):
            key, _, value = cond.partition("=")
            if key not in ("rank", "step", "lr"):
                raise ValueError(f"{ENV}: unknown condition {key!r} in {part!r} (use rank, step, lr)")
            kwargs[key] = float(value) if key == "lr" else int(value)
        rules.append(Rule(index, action, **kwargs))
    return rules


def configured() -> str | None:
    """The driver's GENFORGE_FAULTS, to hand to workers (None when unset)."""
    return os.environ.get(ENV) or None


@dataclass
class Injector:
    """The rules that concern one rank of one run; `at_step` is called before each optimizer step."""

    rules: list[Rule]
    run_dir: Path
    rank: int
    lr: float
    fired: set[int] = field(default_factory=set)

    @classmethod
    def for_rank(cls, text: str | None, run_dir: str | Path, rank: int, lr: float) -> "Injector":
        mine = [r for r in parse(text) if r.rank == rank and (r.lr is None or r.lr == lr)]
        return cls(mine, Path(run_dir), rank, lr)

    def at_step(self, step: int) -> bool:
        """Act on the rules due at optimizer step `step`; True when this step's batch must be poisoned (nan)."""
        poison = False
        for rule in self.rules:
            if rule.index in self.fired or step < rule.step or not self._claim(rule):
                continue
            self.fired.add(rule.index)
            if rule.action == "nan":
                poison = True
            elif rule.action == "raise":
                raise RuntimeError(f"injected fault: {rule.action} at step {step} on rank {self.rank}")
            else:
                os.kill(os.getpid(), signal.SIGKILL if rule.action == "sigkill" else signal.SIGTERM)
        return poison

    def _claim(self, rule: Rule) -> bool:
        """Create the rule's marker; False when an earlier process (or attempt) already fired it."""
        folder = self.run_dir / MARKERS
        folder.mkdir(parents=True, exist_ok=True)
        try:
            os.close(os.open(folder / f"rule-{rule.index}-{rule.action}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True
