"""Promotion on a real MLflow registry: better candidates win, worse ones and noise-level gains are
refused, protocol mismatches are refused, rollback restores, and concurrent promoters leave the best."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest

from genforge.errors import SpecError
from genforge.model_registry.promotion import promote, rollback


@pytest.fixture()
def registry(tmp_path):
    """A fresh SQLite store with a helper that adds versions carrying evaluation tags."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    client.create_registered_model("m")

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
