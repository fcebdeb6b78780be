"""Quality floors and promotion gates.

The floor is what real held-out images score against the same reference at the same N; `fid_ratio` divides the
fakes' FID at that N by it, so real images score about 1 whatever the dataset or extractor. `recognisable` and
`cond_accuracy_min` are read off the domain classifier. Gates are absolute requirements on a candidate's own
metrics: a collapsed generator fails every shipped spec's gates and stays registered but unpromoted, even when it
beats the holder on the promoted metric.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import tiny_spec
from fakes import PixelExtractor, empty_registry

from genforge.config import load_spec
from pipelines import SPEC_DIR

SPECS = sorted(SPEC_DIR.glob("*.yaml"))
# The domain classifier at its default 10 epochs: at 4 it is right 97 % of the time but rarely confident (a third of
# real digits under 0.9), and `recognisable` reads its confidence.
SMALL = ["evaluate.samples=180", "evaluate.seeds=2", "evaluate.kid_subsets=10", "evaluate.kid_subset_size=100"]


def _sqrtm_fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID the textbook way (scipy's sqrtm of S1 S2): independent of genforge's Cholesky/eigvalsh path."""
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def _model(conditional: bool = False):
    """What evaluate_model reads of a model when a sampler replaces its generator: no VAE, so no reconstruction."""
    return SimpleNamespace(manifest={"conditional": conditional}, modules={})


def _real(split, n: int, seed: int, labels: torch.Tensor | None = None) -> torch.Tensor:
    """n real images of `split` in a seeded order; with labels, each image has the asked label."""
    images, y = split.batch(torch.arange(len(split)))
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    if labels is None:
        return images[order[:n]]
    by_label = {int(c): order[y[order] == c] for c in labels.unique()}
    taken = dict.fromkeys(by_label, 0)
    rows = []
    for c in labels.tolist():
        rows.append(by_label[c][taken[c] % len(by_label[c])])
        taken[c] += 1
    return images[torch.stack(rows)]


@pytest.fixture(scope="module")
def digits():
    from genforge.config import spec_from_dict
    from genforge.data import load_dataset

    spec = spec_from_dict(tiny_spec("quality"), SMALL)
    return spec, load_dataset(spec.data)


def _evaluate(spec, data, extractor, info, sampler, conditional=False, overrides=()):
    from genforge.config import spec_from_dict
    from genforge.evaluator.metrics import evaluate_model

    cfg = spec_from_dict(spec.model_dump(mode="json", by_alias=True), list(overrides)).evaluate if overrides \
        else spec.evaluate
    return evaluate_model(_model(conditional), data, cfg, extractor, info, lambda m: None, sampler_override=sampler)


@pytest.fixture(scope="module")
def projection(digits):
    spec, data = digits
    extractor = PixelExtractor(int(np.prod(data.image_shape)), data.num_classes)
    return extractor, {"name": extractor.name, "content_hash": extractor.content_hash, "dataset_classes": False}


class TestFloor:
    def test_floor_is_the_fid_of_held_out_against_reference(self, digits, projection):
        """At the defaults (reference train, 180 test images, samples 180): the floor is the FID of the whole test
        split against the train split, computed here from raw features with sqrtm; KID's floor is KID of the same
        sets with the protocol's subsets and first seed."""
        import evaluation as ev

        spec, data = digits
        extractor, info = projection
        report = _evaluate(spec, data, extractor, info, lambda n, seed, y: _real(data.val, n, seed))
        train = extractor.features(data.train.batch(torch.arange(len(data.train)))[0])
        test = extractor.features(data.test.batch(torch.arange(len(data.test)))[0])
        m = report.metrics
        assert report.floor == {"split": "test", "n": len(data.test), "reference_split": "train"}
        assert m["floor_n"] == len(data.test) == 180
        assert m["fid_floor"] == pytest.approx(_sqrtm_fid(train, test), rel=1e-6)
        kid_floor, _ = ev.kid(train, test, subsets=spec.evaluate.kid_subsets,
                              subset_size=spec.evaluate.kid_subset_size, seed=spec.evaluate.seed)
        assert m["kid_floor"] == pytest.approx(kid_floor, rel=1e-9)

    def test_real_held_out_images_score_a_ratio_of_about_one(self, digits, projection):
        """The held-out images themselves: exactly 1. Other real images (val, never seen by the reference):
        about 1. One image repeated: far above."""
        spec, data = digits
        extractor, info = projection
        itself = _evaluate(spec, data, extractor, info, lambda n, seed, y: _real(data.test, n, seed)).metrics
        assert itself["fid_at_floor_n"] == pytest.approx(itself["fid_floor"], rel=1e-9)
        assert itself["fid_ratio"] == pytest.approx(1.0, rel=1e-9)
        other = _evaluate(spec, data, extractor, info, lambda n, seed, y: _real(data.val, n, seed)).metrics
        assert 0.5 < other["fid_ratio"] < 2, other  # one set of 180 against another: FID's spread at this N
        one, _ = data.train.batch(torch.tensor([0]))
        collapsed = _evaluate(spec, data, extractor, info, lambda n, seed, y: one.expand(n, -1, -1, -1).clone())
        assert collapsed.metrics["fid_ratio"] > 10 * other["fid_ratio"]

    def test_same_n_for_both_sides_of_the_ratio(self, digits, projection):
        """More samples than held-out images: fid stays at the full N, fid_at_floor_n uses the first 180 of each
        draw. Fewer: the floor takes a fixed subsample of the held-out images (without replacement), and
        fid_at_floor_n is fid. A test reference moves the floor to val."""
        from evaluation import frechet_distance
        from genforge.evaluator.reference import reference

        spec, data = digits
        extractor, info = projection

        def sampler(n, seed, y):
            return torch.rand(n, *data.image_shape, generator=torch.Generator().manual_seed(seed))

        big = _evaluate(spec, data, extractor, info, sampler, overrides=["evaluate.samples=400"])
        ref = reference(extractor, data, "train")
        for d in big.draws:
            fakes = extractor.features(sampler(400, d["seed"], None))
            assert d["fid"] == frechet_distance(ref.stats, fakes)
            assert d["fid_at_floor_n"] == frechet_distance(ref.stats, fakes[:180])
        m = big.metrics
        assert m["fid_at_floor_n"] == pytest.approx(np.mean([d["fid_at_floor_n"] for d in big.draws]))
        assert m["fid_ratio"] == pytest.approx(m["fid_at_floor_n"] / m["fid_floor"])
        assert m["fid_ratio_std"] == pytest.approx(m["fid_at_floor_n_std"] / m["fid_floor"])

        small = _evaluate(spec, data, extractor, info, sampler, overrides=["evaluate.samples=100"])
        assert small.floor["n"] == small.metrics["floor_n"] == 100
        assert small.metrics["fid_at_floor_n"] == small.metrics["fid"]
        assert small.metrics["fid_floor"] != pytest.approx(m["fid_floor"])  # a different N: a different floor

        moved = _evaluate(spec, data, extractor, info, sampler, overrides=["evaluate.reference_split=test"])
        assert moved.floor == {"split": "val", "n": 180, "reference_split": "test"}

    def test_the_floor_is_cached_beside_the_reference(self, digits, projection, monkeypatch, tmp_path):
        from genforge.evaluator import reference as reference_module

        spec, data = digits
        extractor, info = projection
        monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path))
        first = _evaluate(spec, data, extractor, info, lambda n, seed, y: _real(data.val, n, seed))
        cached = sorted(p.name for p in (tmp_path / "reference").iterdir())
        assert any(name.startswith("floor-digits-") for name in cached), cached
        monkeypatch.setattr(reference_module, "kid", lambda *a, **k: pytest.fail("the floor was recomputed"))
        again = _evaluate(spec, data, extractor, info, lambda n, seed, y: _real(data.val, n, seed))
        assert again.metrics["fid_floor"] == first.metrics["fid_floor"]
        assert again.metrics["kid_floor"] == first.metrics["kid_floor"]


def test_class_metrics_on_hand_built_probabilities():
    """recognisable and cond_accuracy_min as evaluate_model computes them, from probabilities built by hand; none
    of it when the classifier's classes are not the dataset's."""
    from genforge.evaluator.metrics import _class_metrics

    k, labels = 4, torch.arange(40) % 4
    probs = np.full((40, k), 0.02)
    probs[np.arange(40), labels.numpy()] = 0.94  # confident and right...
    probs[labels.numpy() == 3] = [0.5, 0.3, 0.1, 0.1]  # ...except label 3: unsure, and read as 0
    ref = SimpleNamespace(class_stats=lambda c: None)
    feats = np.random.default_rng(0).normal(size=(40, 3))
    metrics, _ = _class_metrics(ref, feats, probs, labels, k, dataset_classes=True)
    assert metrics["recognisable"] == 0.75 and metrics["cond_accuracy_min"] == 0.0
    assert metrics["cond_accuracy"] == 0.75
    unconditional, _ = _class_metrics(ref, feats, probs, None, k, dataset_classes=True)
    assert unconditional["recognisable"] == 0.75 and "cond_accuracy_min" not in unconditional
    imagenet, _ = _class_metrics(ref, feats, probs, labels, k, dataset_classes=False)
    assert not {"recognisable", "cond_accuracy_min"} & set(imagenet)


@pytest.fixture(scope="module")
def domain(digits):
    from genforge.evaluator.extractors import get_extractor

    spec, data = digits
    return get_extractor(spec.evaluate, data, echo=lambda m: None)


@pytest.fixture()
def registry(tmp_path):
    """A fresh SQLite registry; `add(metrics)` registers a version whose tags are an evaluation's metrics."""
    uri, client, run_id = empty_registry(tmp_path)

    def add(metrics: dict[str, float], protocol: str = "p1") -> int:
        tags = {key: repr(float(value)) for key, value in metrics.items()}
        tags.update(protocol_hash=protocol, protocol_name=f"fid1k-domain-{protocol}")
        return int(client.create_model_version("m", source=f"runs:/{run_id}/sampler", run_id=run_id,
                                               tags=tags).version)

    return uri, client, add


def _holder(client) -> int | None:
    aliases = client.get_registered_model("m").aliases
    return int(aliases["champion"]) if "champion" in aliases else None


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_a_collapsed_model_fails_every_shipped_spec_s_gates(path, digits, domain, registry):
    """Evaluated with the domain classifier: a generator that always returns the same real digit fails the spec's
    gates, stays registered and is not promoted, even into an empty alias; real images of the asked labels pass
    the same gates and are promoted. The real images are the training split's, 100 per label: the digits set holds
    18 held-out images per label, where one or two misread digits (which ones depends on the thread count the
    classifier was trained with) decide the worst label's accuracy against a 0.9 gate."""
    from genforge.model_registry.gates import gates_from_mapping
    from genforge.model_registry.promotion import promote

    spec, data = digits
    shipped = load_spec(path)
    gates = gates_from_mapping(shipped.promote.gates)
    assert gates, f"{path.name} ships no promote.gates"
    conditional = shipped.model.family in ("cgan", "cvae")
    extractor, info = domain
    one, _ = data.train.batch(torch.tensor([0]))
    collapsed = _evaluate(spec, data, extractor, info, lambda n, seed, y: one.expand(n, -1, -1, -1).clone(),
                          conditional).metrics
    real = _evaluate(spec, data, extractor, info, lambda n, seed, y: _real(data.train, n, seed, y), conditional,
                     overrides=["evaluate.samples=1000"]).metrics

    uri, client, add = registry
    bad = add(collapsed)
    decision = promote(uri, "m", bad, metric=shipped.promote.metric, gates=gates)
    assert not decision.promoted and decision.failed_gates and _holder(client) is None
    assert decision.reason.startswith("gate ") and decision.failed_gates[0].split(" ")[0] in decision.reason
    tags = client.get_model_version("m", str(bad)).tags  # registered, and recorded ineligible with the reason
    assert tags["genforge.promotion.champion.eligible"] == "false"
    assert tags["genforge.promotion.champion.decision"] == "gated"
    good = add(real)
    assert promote(uri, "m", good, metric=shipped.promote.metric, gates=gates).promoted, real
    assert _holder(client) == good


def test_the_domain_metrics_of_real_and_collapsed_samples(digits, domain):
    """What the gates read: real digits are recognisable and of the asked label; one digit repeated is
    recognisable too (it is a real digit) but of one label, with an fid_ratio far above 1."""
    spec, data = digits
    extractor, info = domain
    one, _ = data.train.batch(torch.tensor([0]))
    collapsed = _evaluate(spec, data, extractor, info, lambda n, seed, y: one.expand(n, -1, -1, -1).clone(), True)
    real = _evaluate(spec, data, extractor, info, lambda n, seed, y: _real(data.val, n, seed, y), True)
    assert real.metrics["recognisable"] > 0.8 and real.metrics["cond_accuracy_min"] > 0.5
    assert 0.4 < real.metrics["fid_ratio"] < 2
    assert collapsed.metrics["cond_accuracy_min"] == 0.0 and collapsed.metrics["class_coverage"] == 0.1
    assert collapsed.metrics["fid_ratio"] > 10


def test_a_candidate_that_beats_the_holder_but_fails_a_gate_is_not_promoted(registry):
    from genforge.model_registry.promotion import promote

    uri, client, add = registry
    v1 = add({"fid": 10.0, "fid_std": 0.1, "recognisable": 0.9})
    v2 = add({"fid": 2.0, "fid_std": 0.1, "recognisable": 0.2})  # far better FID, unrecognisable samples
    v3 = add({"fid": 1.0, "fid_std": 0.1})  # evaluated before recognisable existed
    gates = ["recognisable>=0.5"]
    assert promote(uri, "m", v1, gates=gates).promoted
    decision = promote(uri, "m", v2, gates=gates)
    assert not decision.promoted and _holder(client) == v1
    assert decision.reason.startswith("gate recognisable>=0.5 failed: recognisable is 0.2")
    assert decision.failed_gates == ["recognisable>=0.5 failed: recognisable is 0.2"]
    missing = promote(uri, "m", v3, gates=gates)
    assert not missing.promoted and "version 3 has no 'recognisable' metric" in missing.reason
    assert _holder(client) == v1


def test_the_promote_command_takes_gates(registry, capsys):
    """--gate is parsed before anything is read: a malformed one is one line and exit 2, and nothing changes; a
    failed one is a decision (exit 0) naming the gate and the value."""
    from pipelines.cli import main

    uri, client, add = registry
    v1 = add({"fid": 10.0, "fid_std": 0.1, "fid_ratio": 30.0})
    before = dict(client.get_model_version("m", str(v1)).tags)
    for bad in ("fid_ratio<<20", "fid_ratio<=", "fid_ratio<=inf", "<=20", "fid_ratio=20"):
        with pytest.raises(SystemExit) as exit_info:
            main(["promote", "m", "--gate", "recognisable>=0.5", "--gate", bad, "--tracking-uri", uri])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "--gate" in err, err
    assert client.get_model_version("m", str(v1)).tags == before and _holder(client) is None

    main(["promote", "m", "--gate", "fid_ratio<=20", "--tracking-uri", uri, "--json"])
    decision = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert decision["promoted"] is False and decision["failed_gates"] == ["fid_ratio<=20 failed: fid_ratio is 30"]
    assert "fid_ratio<=20" in decision["reason"] and _holder(client) is None
    main(["promote", "m", "--gate", "fid_ratio <= 40", "--tracking-uri", uri, "--json"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["promoted"] is True
    assert _holder(client) == v1


@pytest.mark.slow
def test_the_pipeline_reports_a_failed_gate_and_keeps_the_version(ray_session, tracking_uri, client, tmp_path,
                                                                  capsys):
    """`genforge run` with a gate the model fails: exit 0, the version registered, nothing promoted, and the JSON
    decision names the gate and the value. Re-run without gates, the same version is promoted."""
    import yaml

    from pipelines.cli import main

    spec = tiny_spec("gated-run", "vae")
    spec.update(stages=["train", "evaluate", "register", "promote"], tracking={"uri": tracking_uri},
                evaluate={"samples": 200, "seeds": 2, "kid_subsets": 5, "kid_subset_size": 100, "iw_samples": 2,
                          "extractor_epochs": 4},
                register={"model_name": "gated-vae"},
                promote={"gates": {"fid_ratio": "<= 0.5", "recognisable": ">= 0"}})
    path = tmp_path / "gated.yaml"
    path.write_text(yaml.safe_dump(spec))
    main(["run", str(path), "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    decision = result["promotion"]
    assert decision["promoted"] is False and result["champion_uri"] is None
    assert len(decision["failed_gates"]) == 1 and decision["failed_gates"][0].startswith("fid_ratio<=0.5 failed")
    assert f"fid_ratio is {result['metrics']['fid_ratio']:.4g}" in decision["reason"]
    assert {"fid_floor", "kid_floor", "fid_ratio", "recognisable"} <= set(result["metrics"])
    version = client.get_model_version("gated-vae", str(result["registered"]["version"]))
    assert float(version.tags["fid_ratio"]) == pytest.approx(result["metrics"]["fid_ratio"])
    assert float(version.tags["recognisable"]) == pytest.approx(result["metrics"]["recognisable"])
    assert "champion" not in client.get_registered_model("gated-vae").aliases

    main(["run", str(path), "--json", "--set", "promote.gates={}"])
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["registered"]["version"] == result["registered"]["version"] and again["promotion"]["promoted"]


def test_re_logging_an_evaluation_adds_only_the_metrics_the_run_lacks(tmp_path):
    """A run evaluated before genforge measured the floor, evaluated again under the same protocol and weights:
    the new metrics are logged at the weights' step, the old ones get no second row."""
    from mlflow import MlflowClient

    from genforge.tracking.evaluation_logging import TAG, _log_metrics

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    weights = "genforge_model/step_000000010"
    client.set_tag(run_id, TAG + "protocol_hash", "p1")
    client.set_tag(run_id, TAG + "model_artifact", weights)
    client.log_metric(run_id, "fid", 5.0, step=10)
    report = SimpleNamespace(protocol={"hash": "p1"}, metrics={"fid": 5.0, "fid_ratio": 2.5, "fid_floor": 2.0})
    _log_metrics(client, run_id, report, weights)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "fid")] == [(10, 5.0)]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "fid_ratio")] == [(10, 2.5)]
    _log_metrics(client, run_id, report, weights)  # nothing left to add
    assert len(client.get_metric_history(run_id, "fid_ratio")) == 1
