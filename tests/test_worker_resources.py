"""`train.cpus_per_worker`: each Ray Train worker reserves that many CPUs and trains with as many torch threads; a
run the cluster can never hold is refused before anything is written (Ray would leave it pending forever)."""

from __future__ import annotations

import pytest
from conftest import tiny_spec

from genforge.errors import SpecError
from genforge.training.checkpoint import read_meta

pytestmark = pytest.mark.slow


def test_a_worker_trains_with_the_threads_of_the_cpus_it_reserves(train_spec, family_runs):
    result = train_spec(tiny_spec("two-cpu-worker", "vae", epochs=1, cpus_per_worker=2))
    assert result.status == "FINISHED"
    assert read_meta(result.checkpoint)["torch_threads"] == 2
    assert read_meta(family_runs("vae").checkpoint)["torch_threads"] == 1  # the default: one CPU, one thread


def test_more_cpus_than_the_cluster_has_is_refused_before_anything_is_written(train_spec, client):
    name = "three-cpu-worker"
    with pytest.raises(SpecError) as err:  # the session's Ray has 2 CPUs
        train_spec(tiny_spec(name, "vae", epochs=1, cpus_per_worker=3))
    assert str(err.value).startswith("train.workers (tune.workers_per_trial) x train.cpus_per_worker: the job "
                                     "needs 3 CPU; the cluster at this Ray cluster has 2"), str(err.value)
    assert "\n" not in str(err.value)
    assert client.get_experiment_by_name(name) is None  # no experiment, no run
