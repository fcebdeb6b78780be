"""`genforge evaluate` on trained runs of every family: the right metrics, the protocol with every
number, the report artifact; collapse shows in diversity and coverage; in-loop FID leaves training
untouched; the Inception path loads only verified weights and never unpickles."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from conftest import FAMILIES, tiny_spec
from fakes import PixelExtractor

from evaluation.extractors import FeatureExtractor

SMALL = ["evaluate.samples=400", "evaluate.seeds=2", "evaluate.kid_subsets=10", "evaluate.kid_subset_size=100",
         "evaluate.iw_samples=8", "evaluate.extractor_epochs=4"]


@pytest.fixture(scope="module")
def evaluated(family_runs):
    from genforge.evaluator.run_evaluation import evaluate_run

    cache = {}

    def get(family: str):
        if family not in cache:
            run = family_runs(family)
            cache[family] = evaluate_run(run.tracking_uri, run.run_id, overrides=SMALL, echo=lambda m: None)
        return cache[family]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_metrics_per_family(family, evaluated, client):
    result = evaluated(family)
    m = result.metrics
    common = {"fid", "fid_std", "kid", "kid_std", "precision", "recall", "density", "coverage", "is", "is_std",
              "diversity", "class_coverage"}
    assert common <= set(m)
    assert m["fid"] > 0 and m["fid_std"] >= 0 and 0 <= m["precision"] <= 1 and 1 <= m["is"] <= 10
    assert len(result.draws) == 2 and m["fid"] == pytest.approx(np.mean([d["fid"] for d in result.draws]))
    if family in ("vae", "cvae"):
        assert {"recon_mse", "recon_psnr", "recon_ssim", "recon_bce", "nll_elbo", "nll_iw_k8", "bpd_iw_k8"} <= set(m)
        assert m["nll_iw_k8"] <= m["nll_elbo"] + 1.0  # the IW bound is tighter (up to sampling noise)
    if family in ("cgan", "cvae"):
        assert "cond_accuracy" in m and "fid_per_class_mean" in m
        assert {str(c) for c in range(10)} == set(result.per_class)
        assert all("fid" in v and "accuracy" in v for v in result.per_class.values())

    run = client.get_run(result.run_id)
    assert run.data.metrics["fid"] == pytest.approx(m["fid"])
    tags = run.data.tags
    p = result.protocol
    assert tags["genforge.eval.protocol_hash"] == p["hash"] and tags["genforge.eval.extractor"] == "domain"
    assert (
        p["samples"] == 400
        and p["seeds"] == [0, 1]
        and p["dataset"] == "digits"
        and len(p["dataset_fingerprint"]) == 16
    )
    report_dir = tags["genforge.eval.report"]
    assert report_dir.startswith(f"evaluation/{p['hash']}/") and result.report.endswith(report_dir)
    files = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(result.run_id, report_dir)}
    assert {"report.json", "samples.png", "nearest_neighbours.png"} <= files
    assert ("reconstructions.png" in files) == (family in ("vae", "cvae"))


@pytest.mark.slow
def test_re_evaluation_adds_no_second_metric_row(evaluated, family_runs, client):
    from genforge.evaluator.run_evaluation import evaluate_run

    first = evaluated("vae")
    run = family_runs("vae")
    rows = len(client.get_metric_history(first.run_id, "fid"))  # other tests may have used other protocols
    again = evaluate_run(run.tracking_uri, model_uri=run.model_uri, overrides=SMALL, echo=lambda m: None)
    assert again.run_id == first.run_id and again.protocol["hash"] == first.protocol["hash"]
    assert again.metrics["fid"] == first.metrics["fid"]  # same seeds, same weights: the same numbers exactly
    assert len(client.get_metric_history(first.run_id, "fid")) == rows  # the same evaluation adds no row
    extractor_run = client.get_run(first.extractor["mlflow_run_id"])
    assert extractor_run.data.metrics["test_accuracy"] > 0.9
    assert extractor_run.data.tags["genforge.content_hash"] == first.protocol["extractor_hash"]


@pytest.mark.slow
def test_collapsed_generator_shows_in_diversity_and_coverage(family_runs, evaluated):
    from genforge.config import spec_from_dict
    from genforge.data import load_dataset
    from genforge.evaluator.extractors import get_extractor
    from genforge.evaluator.metrics import evaluate_model
    from genforge.tracking.loading import load_run_model

    healthy = evaluated("gan").metrics
    run = family_runs("gan")
    model = load_run_model(run.tracking_uri, run.run_id)
    spec = spec_from_dict(tiny_spec("x"), SMALL)
    data = load_dataset(spec.data)
    extractor, info = get_extractor(spec.evaluate, data, echo=lambda m: None)
    one_digit, _ = data.train.batch(torch.tensor([0]))
    constant = lambda n, seed, labels: one_digit.expand(n, -1, -1, -1).clone()  # noqa: E731
    collapsed = evaluate_model(
        model, data, spec.evaluate, extractor, info, lambda m: None, sampler_override=constant
    ).metrics
    assert collapsed["diversity"] < 1e-6 < healthy["diversity"]
    assert collapsed["class_coverage"] == pytest.approx(0.1)
    assert collapsed["coverage"] < 0.05 and collapsed["recall"] < 0.05
    assert collapsed["is"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_inloop_fid_is_logged_and_leaves_training_untouched(train_spec, family_runs, client):
    plain = family_runs("gan")
    spec = tiny_spec("inloop-gan", "gan", workers=2)
    spec["evaluate"] = {"every_epochs": 1, "inloop_samples": 300, "extractor_epochs": 4}
    run = train_spec(spec)
    fids = client.get_metric_history(run.run_id, "inloop_fid")
    assert [m.step for m in fids] == [6, 12] and all(m.value > 0 for m in fids)
    losses = lambda r: [(m.step, m.value) for m in client.get_metric_history(r.run_id, "train/g_loss")]  # noqa: E731
    assert losses(run) == losses(plain)


def test_evaluate_bad_input(tmp_path, capsys, monkeypatch, tracking_uri, client):
    from pipelines.cli import main

    client.search_experiments()  # make sure the session's store exists

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for args, needle in (
        (["evaluate"], "exactly one of"),
        (["evaluate", "--run", "a", "--model", "b"], "exactly one of"),
        (["evaluate", "--run", "nope"], "no MLflow store at"),
        (["evaluate", "--run", "nope", "--tracking-uri", tracking_uri], "--run nope: no such run"),
        (["evaluate", "--run", "x", "--set", "train.lr=1"], "evaluate.* keys only"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "mlflow.db").exists()


class TestInceptionLoading:
    @pytest.fixture(scope="class")
    def weights(self, tmp_path_factory):
        """A weights file with the real network's layout and random values (the real one is 91 MB and
        not downloadable here): built by skipping torch-fidelity's loader once."""
        import torch_fidelity.feature_extractor_inceptionv3 as tfi

        original = tfi.FeatureExtractorInceptionV3.load_state_dict
        tfi.FeatureExtractorInceptionV3.load_state_dict = lambda self, sd: None
        try:
            path = tmp_path_factory.mktemp("inception") / "random.pth"
            torch.save({}, path)
            net = tfi.FeatureExtractorInceptionV3("x", ["2048"], feature_extractor_weights_path=str(path))
        finally:
            tfi.FeatureExtractorInceptionV3.load_state_dict = original
        torch.manual_seed(0)
        torch.save(net.state_dict(), path)
        return path

    def test_loads_with_matching_sha_and_extracts(self, weights):
        from evaluation.extractors.inception import InceptionExtractor, _sha256

        ex = InceptionExtractor(weights, sha256=_sha256(weights))
        feats, probs = ex.features_and_probs(torch.rand(2, 1, 8, 8))
        assert feats.shape == (2, 2048) and probs.shape == (2, 1008)
        assert isinstance(ex, FeatureExtractor)  # what the runner calls it through
        assert np.allclose(probs.sum(1), 1.0) and ex.content_hash == _sha256(weights)[:16]

    def test_published_sha_is_enforced(self, weights):
        from evaluation.extractors.inception import InceptionExtractor, InceptionWeightsError

        with pytest.raises(InceptionWeightsError, match="does not match"):
            InceptionExtractor(weights)

    def test_missing_weights_is_a_one_line_spec_error(self, tmp_path, monkeypatch):
        from genforge.errors import SpecError
        from genforge.evaluator.extractors import inception_extractor

        monkeypatch.delenv("GENFORGE_INCEPTION_WEIGHTS", raising=False)
        with pytest.raises(SpecError, match="pt_inception-2015-12-05-6726825d.pth") as info:
            inception_extractor(str(tmp_path / "missing.pth"), None)
        assert "\n" not in str(info.value)

    def test_never_unpickles_a_user_file(self, tmp_path):
        from evaluation.extractors.inception import InceptionExtractor, _sha256

        class Payload:
            def __reduce__(self):
                return (exec, ("open('%s', 'w').write('ran')" % (tmp_path / "pwned"),))

        bomb = tmp_path / "bomb.pth"
        bomb.write_bytes(pickle.dumps({"w": Payload()}))
        with pytest.raises(Exception):  # noqa: B017 - any refusal will do; what matters is that nothing ran
            InceptionExtractor(bomb, sha256=_sha256(bomb))
        assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_the_report_agrees_with_its_protocol_and_its_own_numbers(evaluated, client):
    """The logged report.json is the same evaluation the run's metrics and tags describe: its protocol hash is the
    hash of its protocol's content, it has one draw per seed, and FID/KID are the mean and std of those draws."""
    import tempfile
    from pathlib import Path

    from genforge.evaluator.protocol import Protocol

    result = evaluated("cvae")
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(
            result.run_id, f"{client.get_run(result.run_id).data.tags['genforge.eval.report']}/report.json", tmp
        )
        report = json.loads(Path(path).read_text())
    p = report["protocol"]
    content = {k: (tuple(v) if k == "seeds" else v) for k, v in p.items() if k not in ("hash", "name")}
    assert Protocol(**content).hash() == p["hash"] == result.protocol["hash"]
    assert [d["seed"] for d in report["draws"]] == p["seeds"] == [0, 1]
    fids = [d["fid"] for d in report["draws"]]
    assert report["metrics"]["fid"] == pytest.approx(np.mean(fids))
    assert report["metrics"]["fid_std"] == pytest.approx(np.std(fids, ddof=1))
    assert report["metrics"]["kid"] == pytest.approx(np.mean([d["kid"] for d in report["draws"]]))
    assert all(np.isfinite(v) for v in report["metrics"].values())
    accuracies = [v["accuracy"] for v in report["per_class"].values()]
    assert report["metrics"]["cond_accuracy"] == pytest.approx(np.mean(accuracies))  # 10 equal-sized label groups
    assert report["model_artifact"] == client.get_run(result.run_id).data.tags["genforge.model_artifact"]


@pytest.fixture(scope="module")
def digits_and_cvae():
    """Untrained cvae weights on the digits: evaluate_model runs every phase (class metrics, reconstruction)."""
    from genforge.artifacts import LoadedModel, sampler_facts
    from genforge.config import spec_from_dict
    from genforge.data import load_dataset
    from genforge.models import build_models, get_family

    spec = spec_from_dict(tiny_spec("phases", "cvae"), ["evaluate.samples=200", "evaluate.seeds=2", "evaluate.seed=3",
                                                       "evaluate.kid_subsets=4", "evaluate.iw_samples=2"])
    data = load_dataset(spec.data)
    torch.manual_seed(0)
    modules = build_models(spec.model, data.image_shape, data.num_classes)
    for m in modules.values():
        m.eval()
    model = LoadedModel(spec, modules, get_family("cvae").sampler(modules).eval(),
                        sampler_facts(spec, data.image_shape, data.num_classes))
    return spec, data, model


@pytest.mark.parametrize("dataset_classes", [True, False])
def test_evaluate_model_phases_without_ray(digits_and_cvae, dataset_classes):
    """Each phase's numbers, checked against what they must be: one draw per seed whose FID is recomputed from the
    model's own seeded samples, the protocol hash of the protocol's content, metrics in range, reconstruction for
    a VAE, and class metrics exactly when the extractor's classes are the dataset's labels."""
    from evaluation import frechet_distance
    from genforge.evaluator.metrics import evaluate_model
    from genforge.evaluator.protocol import Protocol
    from genforge.evaluator.reference import reference

    spec, data, model = digits_and_cvae
    extractor = PixelExtractor(int(np.prod(data.image_shape)), data.num_classes)
    assert isinstance(extractor, FeatureExtractor)
    info = {"name": extractor.name, "content_hash": extractor.content_hash, "dataset_classes": dataset_classes}
    report = evaluate_model(model, data, spec.evaluate, extractor, info, echo=lambda m: None)

    p, m = report.protocol, report.metrics
    content = {k: (tuple(v) if k == "seeds" else v) for k, v in p.items() if k not in ("hash", "name")}
    assert Protocol(**content).hash() == p["hash"]
    assert p["extractor_hash"] == "pixels-seed0" and p["reference_n"] == len(data.train)
    assert [d["seed"] for d in report.draws] == p["seeds"] == [3, 4]
    ref, labels = reference(extractor, data, "train"), torch.arange(200) % 10
    for d in report.draws:  # the draw is the model's own seeded samples, nothing else
        assert d["fid"] == frechet_distance(ref.stats, extractor.features(model.generate(200, labels, seed=d["seed"])))
    assert m["fid"] == pytest.approx(np.mean([d["fid"] for d in report.draws]))
    assert all(np.isfinite(v) for v in m.values())
    assert all(0 <= m[key] <= 1 for key in ("precision", "recall", "coverage")) and m["density"] >= 0
    assert 1 <= m["is"] <= 10 and m["diversity"] > 0 and m["recon_mse"] > 0 and m["nll_iw_k2"] > 0
    assert set(report.figures) == {"samples", "nearest_neighbours", "reconstructions"}
    assert set(report.per_class) == {str(c) for c in range(10)} and all("fid" in v for v in report.per_class.values())
    class_keys = {"class_coverage", "cond_accuracy"}
    if dataset_classes:
        assert class_keys <= set(m) and 0.1 <= m["class_coverage"] <= 1
        accuracies = [v["accuracy"] for v in report.per_class.values()]
        assert m["cond_accuracy"] == pytest.approx(np.mean(accuracies))  # 10 label groups of 20
    else:  # ImageNet-style classes say nothing about the dataset's labels: nothing is read off them
        assert not class_keys & set(m)
        assert all(set(v) == {"fid"} for v in report.per_class.values())


def test_concurrent_cold_cache_writers_each_use_their_own_temporary_file(monkeypatch, tmp_path):
    """Two evaluations filling the same cold reference cache at once both succeed and leave a whole file. Both
    write their temporary file before either renames it: with one shared temporary name the second rename found
    nothing to move (FileNotFoundError)."""
    import os
    import threading

    from genforge.config import spec_from_dict
    from genforge.data import load_dataset
    from genforge.evaluator.reference import reference, reference_path

    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path))
    data = load_dataset(spec_from_dict(tiny_spec("cache")).data)
    extractor = PixelExtractor(int(np.prod(data.image_shape)), data.num_classes)
    both_written, real_replace = threading.Barrier(2, timeout=60), os.replace

    def replace_when_both_have_written(src, dst):
        both_written.wait()
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_when_both_have_written)
    results, errors = [], []

    def evaluate() -> None:
        try:
            results.append(reference(extractor, data, "train"))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=evaluate) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.setattr(os, "replace", real_replace)  # the private cache stays in place for the read-back
    assert errors == [] and len(results) == 2
    path = reference_path(data, "train", extractor.content_hash)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left behind
    cached, fresh = reference(extractor, data, "train"), results[0]  # read back from the file the rename left
    assert np.array_equal(cached.features, fresh.features) and np.array_equal(cached.labels, fresh.labels)
    for key, value in fresh.stats.to_dict().items():
        assert np.array_equal(cached.stats.to_dict()[key], value), key
