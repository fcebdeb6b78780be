"""Promotion on evidence: move an alias to a candidate only when it beats the current holder under the
same evaluation protocol by more than the required margin and more than the measured noise.

Noise is the sum of the two versions' standard deviations over independent sample draws (the
`fid_std` tags): a difference smaller than that could be a different draw of the same model. Every
decision (promoted or refused, why, the previous holder) is written to the candidate's tags, and the
previous holder is what `rollback` restores.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from genforge.errors import SpecError
from genforge.model_registry.lock import promotion_lock


def _tag(alias: str, key: str) -> str:
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

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "uri": f"models:/{self.name}@{self.alias}"}


def _value(version, metric: str) -> tuple[float, float]:
    if metric not in version.tags:
        raise SpecError(f"version {version.version} has no '{metric}' tag: register it with genforge register (it evaluates first)")
    value = float(version.tags[metric])
    std = float(version.tags.get(f"{metric}_std", 0.0))
    if not math.isfinite(value):
        raise SpecError(f"version {version.version}: {metric} is {value}")
    return value, std


def promote(tracking_uri: str, name: str, version: int | None = None, alias: str = "champion", metric: str = "fid",
            mode: str = "min", min_improvement: float = 0.0) -> Decision:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        versions = []
    if not versions:
        raise SpecError(f"model '{name}': no registered versions in {tracking_uri}")
    number = version or max(int(v.version) for v in versions)
    if number not in {int(v.version) for v in versions}:
        raise SpecError(f"--version {number}: model '{name}' has versions {sorted(int(v.version) for v in versions)}")

    with promotion_lock(client, name):  # read-compare-set, serialised
        cand = client.get_model_version(name, str(number))
        value, std = _value(cand, metric)
        try:
            holder = client.get_model_version_by_alias(name, alias)
        except MlflowException:
            holder = None
        if holder is not None and int(holder.version) == number:
            return Decision(name, alias, number, number, False, f"version {number} already holds @{alias}", metric, value, value, 0.0)
        if holder is None:
            promoted, reason, h_value, noise = True, f"no version held @{alias}", None, 0.0
        else:
            if holder.tags.get("protocol_hash") != cand.tags.get("protocol_hash"):
                raise SpecError(
                    f"protocol mismatch: version {number} was evaluated under {cand.tags.get('protocol_name')} "
                    f"({cand.tags.get('protocol_hash')}), @{alias} (version {holder.version}) under "
                    f"{holder.tags.get('protocol_name')} ({holder.tags.get('protocol_hash')}); numbers from different "
                    f"protocols are not comparable: evaluate both with the same evaluate.* settings"
                )
            h_value, h_std = _value(holder, metric)
            noise = std + h_std
            gain = (h_value - value) if mode == "min" else (value - h_value)
            promoted = gain > min_improvement and gain > noise
            verdict = "better" if promoted else "not better"
            reason = (f"{metric} {value:.4f} vs {h_value:.4f} (version {holder.version}): {verdict} by {gain:.4f}; "
                      f"needs > {max(min_improvement, noise):.4f} (min_improvement {min_improvement:g}, noise {noise:.4f})")
        previous = int(holder.version) if holder is not None else None
        if promoted:
            client.set_registered_model_alias(name, alias, str(number))
            client.set_model_version_tag(name, str(number), _tag(alias, "previous"), str(previous or ""))
        client.set_model_version_tag(name, str(number), _tag(alias, "decision"), "promoted" if promoted else "refused")
        client.set_model_version_tag(name, str(number), _tag(alias, "reason"), reason)
        client.set_model_version_tag(name, str(number), _tag(alias, "time"), time.strftime("%Y-%m-%dT%H:%M:%S"))
    return Decision(name, alias, number, previous, promoted, reason, metric, value, h_value, noise)


@dataclass
class Rollback:
    """The alias moved back: from the holder to the version it took the alias from."""

    name: str
    alias: str
    from_version: int
    to_version: int
    uri: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rollback(tracking_uri: str, name: str, alias: str = "champion") -> Rollback:
    """Give the alias back to the version the current holder took it from."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    with promotion_lock(client, name):
        try:
            holder = client.get_model_version_by_alias(name, alias)
        except MlflowException:
            raise SpecError(f"model '{name}': no version holds @{alias}") from None
        previous = holder.tags.get(_tag(alias, "previous"))
        if not previous:
            raise SpecError(f"model '{name}': version {holder.version} took @{alias} from no one; nothing to roll back to")
        client.set_registered_model_alias(name, alias, previous)
        client.set_model_version_tag(name, holder.version, _tag(alias, "rolled_back"), time.strftime("%Y-%m-%dT%H:%M:%S"))
        client.set_model_version_tag(name, previous, _tag(alias, "restored_from"), holder.version)
    return Rollback(name, alias, int(holder.version), int(previous), f"models:/{name}@{alias}")
