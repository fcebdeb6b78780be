"""Promotion gates: absolute requirements (`fid_ratio<=20`, `cond_accuracy_min>=0.9`) a candidate version must meet
before it may hold an alias, whatever the holder scores. Parsing is pure; checking reads the version's metrics."""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

from genforge.errors import SpecError

_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq}
_GATE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(<=|>=|==|<|>)\s*([-+0-9.eE]+|inf|nan)\s*$")


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    threshold: float

    def passes(self, value: float | None) -> bool:
        """A missing or non-finite value fails: a gate is a requirement, not a preference."""
        return value is not None and math.isfinite(value) and _OPS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.threshold:g}"


def parse_gate(text: str) -> Gate:
    """`KEY<=VALUE` (also >=, <, >, ==; spaces allowed) -> Gate; SpecError naming the text otherwise."""
    m = _GATE.match(text)
    if m is None:
        raise SpecError(f"gate {text!r}: expected METRIC OP NUMBER with OP one of <=, >=, <, >, == "
                        "(e.g. fid_ratio<=20)")
    metric, op, raw = m.groups()
    try:
        threshold = float(raw)
    except ValueError:
        raise SpecError(f"gate {text!r}: {raw!r} is not a number") from None
    if not math.isfinite(threshold):
        raise SpecError(f"gate {text!r}: the threshold must be a finite number")
    return Gate(metric, op, threshold)


def gates_from_mapping(gates: dict[str, str]) -> list[Gate]:
    """A spec's `promote.gates` ({metric: "<= 20"}) as Gates."""
    return [parse_gate(f"{metric}{condition}") for metric, condition in gates.items()]
