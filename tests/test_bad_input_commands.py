"""Bad input to every command, against a store that holds real runs, a registered model and its champion, so
that no check can pass merely because nothing exists. Each case: exit 2, one line naming the offending key or
value, no traceback, and no MLflow run, model version or alias change."""

from __future__ import annotations

import pytest
from conftest import tiny_spec

pytestmark = pytest.mark.slow

SMALL = ["evaluate.samples=300", "evaluate.seeds=2", "evaluate.kid_subsets=10", "evaluate.kid_subset_size=100",
         "evaluate.iw_samples=4", "evaluate.extractor_epochs=4"]


@pytest.fixture(scope="module")
def populated(family_runs, tracking_uri):
    """A trained VAE run, registered as corpus-vae and promoted to @champion."""
    import genforge

    run = family_runs("vae")
    version = genforge.register(run.run_id, name="corpus-vae", overrides=SMALL, tracking_uri=tracking_uri,
                                echo=lambda m: None)
    assert genforge.promote("corpus-vae", version=version.version, tracking_uri=tracking_uri).promoted
    return run.run_id


def _state(client) -> tuple:
    runs = sum(len(client.search_runs([e.experiment_id], max_results=1000)) for e in client.search_experiments())
    versions = [(m.name, v.version) for m in client.search_registered_models()
                for v in client.search_model_versions(f"name = '{m.name}'")]
    aliases = {m.name: dict(m.aliases) for m in client.search_registered_models()}
    return runs, len(client.search_experiments()), sorted(versions), aliases


CASES = [
    (["evaluate", "--run", "0123456789abcdef0123456789abcdef"], "no such run"),
    (["evaluate", "--model", "models:/corpus-vae@nobody"], "models:/corpus-vae@nobody"),
    (["evaluate", "--model", "models:/no-such-model/1"], "models:/no-such-model/1"),
    (["evaluate", "--model", "s3://bucket/model"], "expected runs:/"),
    (["evaluate"], "exactly one of --run"),
    (["evaluate", "--run", "RUN", "--model", "models:/corpus-vae@champion"], "exactly one of --run"),
    (["evaluate", "--run", "RUN", "--set", "train.epochs=3"], "evaluate.* keys only"),
    (["evaluate", "--run", "RUN", "--set", "evaluate.samples=lots"], "evaluate.samples"),
    (["evaluate", "--run", "RUN", "--set", "evaluate.bogus=1"], "unknown key 'evaluate.bogus'"),
    (["evaluate", "--run", "RUN", "--samples", "5"], "--samples"),
    (["evaluate", "--run", "RUN", "--extractor", "inception", "--set", "evaluate.inception_weights=/nope/w.pth"],
     "evaluate.inception_weights"),
    (["register", "--run", "0123456789abcdef0123456789abcdef"], "no such run"),
    (["register", "--run", "RUN", "--name", "../escape"], "--name: '../escape'"),
    (["register", "--run", "RUN", "--name", "a/b"], "--name: 'a/b'"),
    (["register", "--run", "RUN", "--name", "team:model"], "--name: 'team:model'"),
    (["register", "--run", "RUN", "--name", "%2e%2e%2fx"], "--name: '%2e%2e%2fx'"),
    (["register", "--run", "RUN", "--set", "model.beta=2"], "evaluate.* keys only"),
    (["promote", "no-such-model"], "no registered versions"),
    (["promote", "corpus-vae", "--version", "99"], "--version 99"),
    (["promote", "corpus-vae", "--alias", "latest"], "reserved"),
    (["promote", "corpus-vae", "--alias", "v1"], "reserved"),
    (["promote", "corpus-vae", "--alias", "../x"], "--alias"),
    (["promote", "corpus-vae", "--metric", "precision", "--mode", "min"], "precision is better when higher"),
    (["promote", "corpus-vae", "--metric", "no_such_metric", "--mode", "min"], "no 'no_such_metric' tag"),
    (["promote", "..\\evil"], "MODEL_NAME"),
    (["rollback", "corpus-vae"], "nothing to roll back to"),
    (["rollback", "corpus-vae", "--alias", "nobody"], "no version holds @nobody"),
    (["generate", "models:/corpus-vae@nobody", "--out", "x.png"], "models:/corpus-vae@nobody"),
    (["generate", "models:/corpus-vae@champion", "--label", "3", "--out", "x.png"], "not a conditional model"),
    (["generate", "models:/corpus-vae@champion", "-n", "0", "--out", "x.png"], "-n"),
    (["generate", "file:///etc/passwd", "--out", "x.png"], "--run file:///etc/passwd: no such run"),
    (["evaluate", "--model", "file:///etc/passwd"], "expected runs:/"),
    (["extractor", "train", "--dataset", "imagenet"], "imagenet"),
]


@pytest.mark.parametrize("args,needle", CASES, ids=[" ".join(c[0])[:50] for c in CASES])
def test_bad_input_to_every_command(populated, args, needle, tracking_uri, client, tmp_path, monkeypatch, capsys):
    from pipelines.cli import main

    monkeypatch.chdir(tmp_path)
    before = _state(client)
    argv = [populated if a == "RUN" else a for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--tracking-uri", tracking_uri])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("genforge: error: ") and needle in err, err
    assert "Traceback" not in err
    assert _state(client) == before
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("override,needle", [
    ("tracking.experiment=../../outside", "tracking.experiment"),
    ("tracking.experiment=/abs/path", "tracking.experiment"),
    ("register.model_name=team/model", "register.model_name"),
    ("promote.alias=latest", "promote.alias"),
    ("tune.metric=val_neg_elbow", "tune.metric"),
])
def test_bad_names_in_a_spec_are_caught_before_training(override, needle, tracking_uri, client, tmp_path, capsys,
                                                        monkeypatch):
    import yaml

    from pipelines.cli import main

    monkeypatch.chdir(tmp_path)
    spec = {**tiny_spec("bad-name"), "tracking": {"uri": tracking_uri},
            "stages": ["tune", "evaluate", "register", "promote"]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    before = _state(client)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(path), "--set", override])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert _state(client) == before
