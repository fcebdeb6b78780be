"""Promotion on a real MLflow registry: better candidates win, worse ones and noise-level gains are
refused, protocol mismatches are refused, rollback restores, and concurrent promoters leave the best."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest
from fakes import empty_registry

from genforge.errors import SpecError
from genforge.model_registry.promotion import promote, rollback


@pytest.fixture()
def registry(tmp_path):
    """A fresh SQLite store with a helper that adds versions carrying evaluation tags."""
    uri, client, run_id = empty_registry(tmp_path)

    def add(fid: float, std: float = 0.1, protocol: str = "p1") -> int:
        v = client.create_model_version("m", source=f"runs:/{run_id}/sampler", run_id=run_id,
                                        tags={"fid": repr(fid), "fid_std": repr(std), "protocol_hash": protocol,
                                              "protocol_name": f"fid1k-domain-{protocol}"})
        return int(v.version)

    return uri, client, add


def _holder(client) -> int:
    return int(client.get_model_version_by_alias("m", "champion").version)


def test_first_version_is_promoted_and_better_ones_replace_it(registry):
    uri, client, add = registry
    v1, v2 = add(10.0), add(8.0)
    assert promote(uri, "m", v1).promoted and _holder(client) == v1
    decision = promote(uri, "m", v2)
    assert decision.promoted and decision.previous == v1 and _holder(client) == v2
    tags = client.get_model_version("m", str(v2)).tags
    assert tags["genforge.promotion.champion.decision"] == "eligible"
    assert tags["genforge.promotion.champion.previous"] == str(v1)


@pytest.mark.parametrize("fid,std,min_improvement", [(11.0, 0.1, 0.0), (9.9, 0.1, 0.0), (9.0, 0.1, 2.0)])
def test_worse_noisy_or_too_small_gains_are_refused(registry, fid, std, min_improvement):
    uri, client, add = registry
    v1 = add(10.0, 0.1)
    promote(uri, "m", v1)
    v2 = add(fid, std)
    decision = promote(uri, "m", v2, min_improvement=min_improvement)
    assert not decision.promoted and _holder(client) == v1
    assert client.get_model_version("m", str(v2)).tags["genforge.promotion.champion.decision"] == "refused"
    assert "needs >" in decision.reason


def test_protocol_mismatch_is_refused_with_an_explanation(registry):
    uri, client, add = registry
    v1, v2 = add(10.0, protocol="p1"), add(1.0, protocol="p2")
    promote(uri, "m", v1)
    with pytest.raises(SpecError, match="protocol mismatch"):
        promote(uri, "m", v2)
    assert _holder(client) == v1


def test_rollback_restores_the_previous_holder(registry):
    uri, client, add = registry
    v1, v2 = add(10.0), add(5.0)
    promote(uri, "m", v1)
    promote(uri, "m", v2)
    assert rollback(uri, "m").to_version == v1 and _holder(client) == v1
    with pytest.raises(SpecError, match="nothing to roll back"):
        rollback(uri, "m")


def _promote_at(uri: str, version: int, start: float) -> None:
    while time.time() < start:
        time.sleep(0.001)
    promote(uri, "m", version)


def test_concurrent_promoters_leave_the_best(registry):
    uri, client, add = registry
    fids = [9.0, 4.0, 7.0, 5.0, 8.0, 6.0]
    versions = [add(f, 0.01) for f in fids]
    start = time.time() + 2.0
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_promote_at, args=(uri, v, start)) for v in versions]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert _holder(client) == versions[fids.index(min(fids))]


def test_a_rolled_back_version_is_not_promoted_again(registry):
    """The next `genforge run` re-registers the same run and promotes its version again: that must not undo
    the rollback."""
    uri, client, add = registry
    v1, v2 = add(10.0), add(5.0)
    promote(uri, "m", v1)
    promote(uri, "m", v2)
    assert rollback(uri, "m").to_version == v1
    again = promote(uri, "m", v2)
    assert not again.promoted and "rolled back" in again.reason and _holder(client) == v1


def test_noise_of_the_promoted_metric_and_its_direction(registry):
    """kid is compared with kid_std (not fid_std), and a mode against a metric's direction is refused."""
    uri, client, add = registry
    v1, v2 = add(10.0), add(10.0)
    for v, kid, kid_std in ((v1, 0.050, 0.004), (v2, 0.045, 0.004)):
        client.set_model_version_tag("m", str(v), "kid", repr(kid))
        client.set_model_version_tag("m", str(v), "kid_std", repr(kid_std))
    promote(uri, "m", v1, metric="kid")
    decision = promote(uri, "m", v2, metric="kid")  # better by 0.005, but the noise is 0.008
    assert not decision.promoted and decision.noise == pytest.approx(0.008) and _holder(client) == v1
    with pytest.raises(SpecError, match="kid is better when lower"):
        promote(uri, "m", v2, metric="kid", mode="max")
    with pytest.raises(SpecError, match="unknown direction"):
        promote(uri, "m", v2, metric="my_score")


def _gate_tags(client, version: int, **metrics: float) -> None:
    for key, value in metrics.items():
        client.set_model_version_tag("m", str(version), key, repr(value))


def test_a_gated_version_is_never_chosen_by_a_later_converge(registry):
    """v2 beats everyone on fid but fails the gate: recorded ineligible, and when v3 is promoted later the alias
    goes to v3 (the best eligible), not to v2 (the best by fid)."""
    uri, client, add = registry
    v1, v2, v3 = add(10.0), add(2.0), add(5.0)
    _gate_tags(client, v1, recognisable=0.9)
    _gate_tags(client, v2, recognisable=0.1)
    _gate_tags(client, v3, recognisable=0.8)
    gates = ["recognisable>=0.5"]
    assert promote(uri, "m", v1, gates=gates).promoted
    gated = promote(uri, "m", v2, gates=gates)
    assert not gated.promoted and gated.failed_gates == ["recognisable>=0.5 failed: recognisable is 0.1"]
    tags = client.get_model_version("m", str(v2)).tags
    assert tags["genforge.promotion.champion.eligible"] == "false"
    assert tags["genforge.promotion.champion.decision"] == "gated"
    assert tags["genforge.promotion.champion.gates"] == "recognisable>=0.5 failed: recognisable is 0.1"
    assert promote(uri, "m", v3, gates=gates).promoted and _holder(client) == v3
    assert client.get_model_version("m", str(v3)).tags["genforge.promotion.champion.gates"] == \
        "passed: recognisable>=0.5"
    assert rollback(uri, "m").to_version == v1  # rollback skips the gated version too


def test_a_holder_that_fails_a_gate_gives_the_alias_up(registry):
    """Promoted before a gate existed, then promoted again under it: the alias goes to the best eligible version,
    or is removed when there is none; gates are decided per promotion, so looser gates make it eligible again."""
    uri, client, add = registry
    v1, v2 = add(10.0), add(5.0)
    _gate_tags(client, v1, fid_ratio=8.0)
    _gate_tags(client, v2, fid_ratio=30.0)
    promote(uri, "m", v1)
    promote(uri, "m", v2)
    assert _holder(client) == v2
    decision = promote(uri, "m", v2, gates=["fid_ratio<=20"])
    assert not decision.promoted and "now goes to version 1" in decision.reason and _holder(client) == v1
    alone = promote(uri, "m", v1, gates=["fid_ratio<=5"])  # the last eligible version fails too: nobody holds it
    assert not alone.promoted and "is now unset" in alone.reason
    assert "champion" not in client.get_registered_model("m").aliases
    assert promote(uri, "m", v1, gates=["fid_ratio<=20"]).promoted and _holder(client) == v1


def _promote_gated_at(uri: str, version: int, start: float, gates: list[str]) -> None:
    while time.time() < start:
        time.sleep(0.001)
    promote(uri, "m", version, gates=gates)


def test_concurrent_promoters_never_leave_a_gated_version_holding(registry):
    """The best version by fid took the alias from v1 before its gate existed. Its own promoter (now gated) and the
    other versions' run at once. Which of them become eligible depends on the holder each one meets (v4 or v1), but
    whatever the interleaving the gated version ends without the alias, and the alias holds the best of the
    versions recorded eligible (at worst v1, which stays eligible)."""
    uri, client, add = registry
    fids = [9.0, 4.0, 7.0, 5.0, 8.0, 6.0]
    versions = [add(f, 0.01) for f in fids]
    for v, f in zip(versions, fids):
        _gate_tags(client, v, recognisable=0.1 if f == 4.0 else 0.9)
    first, best = versions[0], versions[fids.index(4.0)]
    assert promote(uri, "m", first).promoted and promote(uri, "m", best).promoted  # no gates yet
    start = time.time() + 2.0
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_promote_gated_at, args=(uri, v, start, ["recognisable>=0.5"]))
             for v in versions[1:]]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    eligible = [v for v in versions
                if client.get_model_version("m", str(v)).tags.get("genforge.promotion.champion.eligible") == "true"]
    assert best not in eligible and first in eligible
    assert _holder(client) == min(eligible, key=lambda v: fids[versions.index(v)])
