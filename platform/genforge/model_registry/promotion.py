"""Promotion on evidence, correct under any interleaving of concurrent promoters.

A candidate becomes *eligible* for an alias when it beats the current holder under the same evaluation
protocol by more than the required margin and more than the measured noise (the sum of the two versions'
`{metric}_std` over independent sample draws: a smaller difference could be a different draw of the same
model). The decision, its reason and the holder it was compared with are written to the candidate's tags.

MLflow has no compare-and-set: an alias update is last-writer-wins, so "read the holder, compare, set"
races. Instead of a lock, the alias is treated as derived state and every promoter converges it: after
recording its own eligibility, it repeatedly reads the eligible versions and the holder, and sets the alias to
the best eligible version until the holder already is that version. Why this is correct whatever the order of
writes: eligibility tags only accumulate (a rollback marks a version ineligible the same way), and the last
alias write P makes is followed by a read that P checks. Any eligibility written before that read is in it, so
P stops only when the alias holds the best of them; any eligibility written after it belongs to a promoter
whose own later read sees the alias and the full set, and who rewrites the alias unless it already holds the
best. So once every promoter has returned, the alias holds the best eligible version, and nobody's write can be
lost. (`tests/test_promotion_server.py` runs many promoters against a real `mlflow server` behind a proxy that
delays every request by a random amount.)

Gates (`promote.gates`, `genforge promote --gate`) are absolute requirements on the candidate's own metric tags
(`fid_ratio<=20`, `recognisable>=0.5`), checked before any comparison: a candidate that fails one (or lacks the
metric) is recorded ineligible with the failed gate and its value, stays registered, and is never promoted. The
converging argument covers it: the ineligibility is written before the promoter reads the alias, so a concurrent
promoter that sets the alias to it afterwards reads the tag on its next round and moves the alias to the best
eligible version (or removes the alias when none is left: an ineligible version never keeps it); and if the
candidate held the alias already, its own promoter moves it away the same way.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from genforge.errors import RunError, SpecError
from genforge.model_registry.gates import Gate, parse_gate
from genforge.model_registry.store import holder_version, registry_call

# Which way is better, for the metrics a version carries. Promoting on one of these in the other mode is an error.
METRIC_DIRECTION = {
    "fid": "min", "fid_ratio": "min", "kid": "min", "fid_per_class_mean": "min", "nll_elbo": "min",
    "nll_iw_k64": "min", "bpd_iw_k64": "min", "precision": "max", "recall": "max", "density": "max",
    "coverage": "max", "is": "max", "cond_accuracy": "max", "cond_accuracy_min": "max", "class_coverage": "max",
    "recognisable": "max",
}
MAX_CONVERGE_ROUNDS = 50


def tag(alias: str, key: str) -> str:
    return f"genforge.promotion.{alias}.{key}"


@dataclass
class Decision:
    name: str
    alias: str
    candidate: int
    previous: int | None
    promoted: bool
    reason: str
    metric: str
    candidate_value: float
    previous_value: float | None
    noise: float
    failed_gates: list[str] = field(default_factory=list)  # each gate the candidate failed, with its value

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "uri": f"models:/{self.name}@{self.alias}"}

    @property
    def holds_alias(self) -> bool:
        """The candidate holds the alias now: promoted, or already the holder and passing its gates."""
        return self.promoted or (self.previous == self.candidate and not self.failed_gates)


def resolve_mode(metric: str, mode: str | None) -> str:
    """The direction of `metric`: known metrics decide it; a contradicting `mode` is refused."""
    known = METRIC_DIRECTION.get(metric)
    if mode is None:
        if known is None:
            raise SpecError(f"--metric {metric}: unknown direction; give --mode min or --mode max")
        return known
    if known is not None and mode != known:
        raise SpecError(f"--mode {mode}: {metric} is better when {'lower' if known == 'min' else 'higher'} "
                        f"(mode {known})")
    return mode


def metric_value(version, metric: str) -> tuple[float, float]:
    """(value, std) of a version's metric tag; std 0 when the version records none."""
    if metric not in version.tags:
        raise SpecError(f"version {version.version} has no '{metric}' tag: register it with genforge register "
                        "(it evaluates first)")
    value = float(version.tags[metric])
    std = float(version.tags.get(f"{metric}_std", 0.0))
    if not math.isfinite(value):
        raise SpecError(f"version {version.version}: {metric} is {value}")
    return value, std


def _compare(cand, holder, metric: str, mode: str, min_improvement: float) -> tuple[bool, str, float | None, float]:
    """(eligible, reason, holder's value, noise) of a candidate against the alias holder."""
    value, std = metric_value(cand, metric)
    if holder is None:
        return True, "no version held the alias", None, 0.0
    if holder.tags.get("protocol_hash") != cand.tags.get("protocol_hash"):
        raise SpecError(
            f"protocol mismatch: version {cand.version} was evaluated under {cand.tags.get('protocol_name')} "
            f"({cand.tags.get('protocol_hash')}), the holder (version {holder.version}) under "
            f"{holder.tags.get('protocol_name')} ({holder.tags.get('protocol_hash')}); numbers from different "
            f"protocols are not comparable: evaluate both with the same evaluate.* settings"
        )
    h_value, h_std = metric_value(holder, metric)
    noise = std + h_std
    gain = (h_value - value) if mode == "min" else (value - h_value)
    eligible = gain > min_improvement and gain > noise
    reason = (f"{metric} {value:.4f} vs {h_value:.4f} (version {holder.version}): "
              f"{'better' if eligible else 'not better'} by {gain:.4f}; needs > {max(min_improvement, noise):.4f} "
              f"(min_improvement {min_improvement:g}, noise {noise:.4f})")
    return eligible, reason, h_value, noise


def check_gates(version, gates: Sequence[Gate]) -> list[str]:
    """The gates `version` fails on its own metric tags, each with the value it has (a missing metric fails)."""
    failed = []
    for gate in gates:
        raw = version.tags.get(gate.metric)
        try:
            value = None if raw is None else float(raw)
        except ValueError:
            value = None
        if gate.passes(value):
            continue
        if raw is None:
            failed.append(f"{gate} failed: version {version.version} has no '{gate.metric}' metric")
        else:
            failed.append(f"{gate} failed: {gate.metric} is {repr(raw) if value is None else f'{value:.4g}'}")
    return failed


def _is_eligible(version, alias: str, holder: int | None) -> bool:
    """Eligible: promoted by genforge and not rolled back; a holder set by hand (no genforge tags) counts too."""
    state = version.tags.get(tag(alias, "eligible"))
    return state == "true" or (state is None and int(version.version) == holder)


def converge(client, name: str, alias: str, metric: str, mode: str, protocol_hash: str | None) -> int | None:
    """Set the alias to the best eligible version until a read confirms it holds it; returns the holder."""
    for _ in range(MAX_CONVERGE_ROUNDS):
        holder = holder_version(client, name, alias)
        versions = registry_call(lambda: client.search_model_versions(f"name = '{name}'"), f"listing {name}")
        pool = [v for v in versions if _is_eligible(v, alias, holder) and metric in v.tags
                and v.tags.get("protocol_hash") == protocol_hash]
        if not pool:
            held = next((v for v in versions if int(v.version) == holder), None)
            if held is None or _is_eligible(held, alias, holder):
                return holder
            # The holder was made ineligible (a failed gate) and nothing eligible is left: no version may hold it.
            # Like a set, the delete is followed by another read.
            registry_call(lambda: client.delete_registered_model_alias(name, alias), f"removing @{alias}")
            continue
        sign = 1.0 if mode == "min" else -1.0
        best = min(pool, key=lambda v: (sign * float(v.tags[metric]), int(v.version)))
        if int(best.version) == holder:
            return holder
        _set_holder(client, name, alias, best.version, holder)
    raise RunError(f"@{alias} of {name} did not settle after {MAX_CONVERGE_ROUNDS} rounds of concurrent promotions")


def _set_holder(client, name: str, alias: str, version: str, previous: int | None) -> None:
    registry_call(lambda: client.set_registered_model_alias(name, alias, version), f"setting @{alias}")
    registry_call(lambda: client.set_model_version_tag(name, version, tag(alias, "previous"), str(previous or "")),
                  "recording the previous holder")


def _record(client, name: str, number: int, alias: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        registry_call(lambda k=key, v=value: client.set_model_version_tag(name, str(number), tag(alias, k), v),
                      "recording the decision")


def _candidate(client, name: str, version: int | None, tracking_uri: str):
    versions = registry_call(lambda: client.search_model_versions(f"name = '{name}'"), f"listing {name}")
    if not versions:
        raise SpecError(f"model '{name}': no registered versions in {tracking_uri}")
    numbers = sorted(int(v.version) for v in versions)
    number = version or numbers[-1]
    if number not in numbers:
        raise SpecError(f"--version {number}: model '{name}' has versions {numbers}")
    return registry_call(lambda: client.get_model_version(name, str(number)), f"reading {name} v{number}")


def _refuse_gated(client, cand, alias: str, metric: str, mode: str, value: float, holder_number: int | None,
                  failed: list[str]) -> Decision:
    """Record the candidate ineligible for the gates it failed; if it holds the alias (promoted before, or set by a
    concurrent promoter that read before this record), move the alias to the best eligible version or remove it."""
    name, number = cand.name, int(cand.version)
    reason = f"gate {'; '.join(failed)} (version {number} stays registered, not promoted to @{alias})"
    _record(client, name, number, alias, {"eligible": "false", "decision": "gated", "reason": reason,
                                          "gates": "; ".join(failed), "compared_with": str(holder_number or ""),
                                          "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    if holder_version(client, name, alias) == number:  # read after the record: see the module docstring
        final = converge(client, name, alias, metric, mode, cand.tags.get("protocol_hash"))
        reason += f"; it held @{alias}, which " + (f"now goes to version {final}" if final else "is now unset")
    return Decision(name, alias, number, holder_number, False, reason, metric, value, None, 0.0, failed)


def promote(tracking_uri: str, name: str, version: int | None = None, alias: str = "champion", metric: str = "fid",
            mode: str | None = None, min_improvement: float = 0.0, gates: Sequence[Gate | str] = ()) -> Decision:
    """Decide whether `version` (default: the latest) may hold `alias`, record why, and converge the alias.
    `gates` (Gates or texts like "fid_ratio<=20") are requirements on the candidate's own metrics, checked first."""
    from mlflow import MlflowClient

    mode = resolve_mode(metric, mode)
    gates = [g if isinstance(g, Gate) else parse_gate(g) for g in gates]  # bad input before anything is read
    client = MlflowClient(tracking_uri)
    cand = _candidate(client, name, version, tracking_uri)
    number, value = int(cand.version), metric_value(cand, metric)[0]
    holder_number = holder_version(client, name, alias)
    failed = check_gates(cand, gates)
    if failed:
        return _refuse_gated(client, cand, alias, metric, mode, value, holder_number, failed)
    if holder_number == number:
        return Decision(name, alias, number, number, False, f"version {number} already holds @{alias}", metric,
                        value, value, 0.0)
    if cand.tags.get(tag(alias, "eligible")) == "false" and cand.tags.get(tag(alias, "rolled_back")):
        reason = f"version {number} was rolled back from @{alias}; it is not promoted again (register a new version)"
        return Decision(name, alias, number, holder_number, False, reason, metric, value, None, 0.0)
    holder = None if holder_number is None else registry_call(
        lambda: client.get_model_version(name, str(holder_number)), f"reading {name} v{holder_number}")
    eligible, reason, h_value, noise = _compare(cand, holder, metric, mode, min_improvement)
    _record(client, name, number, alias, {"decision": "eligible" if eligible else "refused", "reason": reason,
                                          "gates": "passed: " + ", ".join(map(str, gates)) if gates else "none",
                                          "compared_with": str(holder_number or ""), "eligible": str(eligible).lower(),
                                          "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    final = converge(client, name, alias, metric, mode, cand.tags.get("protocol_hash")) if eligible else holder_number
    if eligible and final != number:
        reason += f"; a better version ({final}) promoted at the same time holds @{alias}"
    return Decision(name, alias, number, holder_number, final == number, reason, metric, value, h_value, noise)


@dataclass
class Rollback:
    """The alias moved back: from the holder to the best version still eligible."""

    name: str
    alias: str
    from_version: int
    to_version: int
    uri: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rollback(tracking_uri: str, name: str, alias: str = "champion", metric: str = "fid", mode: str | None = None
             ) -> Rollback:
    """Mark the holder as rolled back (never promoted again automatically) and give the alias to the best
    version still eligible: normally the one the holder took it from."""
    from mlflow import MlflowClient

    mode = resolve_mode(metric, mode)
    client = MlflowClient(tracking_uri)
    holder_number = holder_version(client, name, alias)
    if holder_number is None:
        raise SpecError(f"model '{name}': no version holds @{alias}")
    holder = registry_call(lambda: client.get_model_version(name, str(holder_number)), f"reading {name}")
    # Only versions the converge below can choose (same protocol, ranked by `metric`): otherwise it would find none
    # and remove the alias instead of handing it back.
    others = [v for v in registry_call(lambda: client.search_model_versions(f"name = '{name}'"), f"listing {name}")
              if int(v.version) != holder_number and v.tags.get(tag(alias, "eligible")) == "true"
              and metric in v.tags and v.tags.get("protocol_hash") == holder.tags.get("protocol_hash")]
    if not others:
        raise SpecError(f"model '{name}': version {holder_number} holds @{alias} and no other version is eligible "
                        f"under its protocol with a '{metric}' tag; nothing to roll back to")
    rolled_back = {"eligible": "false", "rolled_back": time.strftime("%Y-%m-%dT%H:%M:%S")}
    _record(client, name, holder_number, alias, rolled_back)
    final = converge(client, name, alias, metric, mode, holder.tags.get("protocol_hash"))
    if final == holder_number or final is None:
        where = "was removed" if final is None else f"still points at version {holder_number}"
        raise RunError(f"model '{name}': @{alias} {where} after the rollback")
    return Rollback(name, alias, holder_number, final, f"models:/{name}@{alias}")
