"""genforge on Kubeflow Pipelines: a shipped spec compiles offline into a KFP v2 pipeline whose tasks run the
stages in order and hand each other their results; bad input is one line and exit 2 with nothing written; and
the compiled pipeline really runs (KFP's local runner, each component in its own subprocess, as in a pod)
through training, evaluation, registration and promotion against a fresh MLflow store."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import tiny_spec

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "pipelines" / "quickstart.yaml"


@pytest.fixture
def genforge(monkeypatch):
    """`genforge` in-process (its main(), which maps errors to exit codes), with the `pipeline` group present
    for the test even where pipelines/cli.py does not register it (the change is undone after the test)."""
    from pipelines.cli import cli, main
    from pipelines.commands.kfp_pipeline import pipeline

    if "pipeline" not in cli.commands:
        monkeypatch.setitem(cli.commands, "pipeline", pipeline)
    return main


def _tasks(compiled: dict) -> dict:
    return compiled["root"]["dag"]["tasks"]


def _producer(task: dict, parameter: str) -> str | None:
    source = task["inputs"]["parameters"][parameter]
    return source.get("taskOutputParameter", {}).get("producerTask")


def test_quickstart_compiles_to_the_stages_in_order_with_their_results_passed_on(genforge, tmp_path, capsys):
    out = tmp_path / "quickstart.kfp.yaml"
    genforge(["pipeline", "compile", str(QUICKSTART), "--out", str(out), "--set", "train.epochs=3"])
    assert str(out) in capsys.readouterr().out
    compiled = yaml.safe_load(out.read_text())
    tasks = _tasks(compiled)

    assert compiled["pipelineInfo"]["name"] == "genforge-quickstart-vae"
    assert set(tasks) == {"tune", "evaluate", "register", "promote"}  # quickstart's stages: a sweep first
    order = ["tune", "evaluate", "register", "promote"]
    for before, after in zip(order, order[1:]):
        assert tasks[after]["dependentTasks"].count(before) == 1, (before, after)
    assert "dependentTasks" not in tasks["tune"]
    # The run the sweep chose is evaluated, the evaluated run is registered, the registered version promoted.
    assert _producer(tasks["evaluate"], "run_id") == "tune"
    assert _producer(tasks["register"], "run_id") == "evaluate"
    assert _producer(tasks["promote"], "model_name") == _producer(tasks["promote"], "version") == "register"
    assert all(_producer(tasks[t], "tracking_uri") == "tune" for t in order[1:])
    # The spec travels as a pipeline parameter, resolved with the compile-time --set; run-time overrides too.
    params = compiled["root"]["inputDefinitions"]["parameters"]
    spec = yaml.safe_load(params["spec_text"]["defaultValue"])
    assert spec["train"]["epochs"] == 3 and spec["register"]["model_name"] == "mnist5k-vae"
    assert params["overrides"]["defaultValue"] == []
    assert tasks["tune"]["inputs"]["parameters"]["spec_text"] == {"componentInputParameter": "spec_text"}
    # Each component runs genforge's API in the genforge image; genforge's stages are idempotent, KFP's cache off.
    for name, executor in compiled["deploymentSpec"]["executors"].items():
        assert executor["container"]["image"] == "genforge:0.1.0", name
        assert "pip install" not in " ".join(executor["container"]["command"]), name  # kfp is in the image
    assert all(not t["cachingOptions"].get("enableCache") for t in tasks.values())
    outputs = compiled["root"]["outputDefinitions"]["parameters"]
    assert {"run_id", "model_name", "version", "promoted", "reason", "champion_uri"} <= set(outputs)


@pytest.mark.parametrize("address, variable", [("http://head:8265", "GENFORGE_JOBS_ADDRESS"),
                                               ("ray://head:10001", "RAY_ADDRESS")], ids=["jobs-api", "ray-client"])
def test_ray_address_and_image_go_to_the_heavy_task(genforge, tmp_path, address, variable):
    out = tmp_path / "train.yaml"
    genforge(["pipeline", "compile", str(QUICKSTART), "--out", str(out), "--set", "stages=[train,evaluate]",
              "--image", "registry.example.com/genforge:0.1.0", "--ray-address", address])
    compiled = yaml.safe_load(out.read_text())
    assert set(_tasks(compiled)) == {"train", "evaluate"}
    executors = compiled["deploymentSpec"]["executors"]
    env = {e["name"]: e["value"] for e in executors["exec-train"]["container"].get("env", [])}
    assert env[variable] == address
    assert variable not in {e["name"] for e in executors["exec-evaluate"]["container"].get("env", [])}
    assert {e["container"]["image"] for e in executors.values()} == {"registry.example.com/genforge:0.1.0"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.yaml"], "spec file not found: missing.yaml"),
        ([str(QUICKSTART), "--set", "model.latnt_dim=3"], "unknown key 'model.latnt_dim'"),
        ([str(QUICKSTART), "--set", "tracking.uri=https://me:secret@mlflow.example.com"], "carries a password"),
        ([str(QUICKSTART), "--set", "stages=[]"], "stages: empty"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(genforge, tmp_path, capsys, args, message):
    out = tmp_path / "p.yaml"
    with pytest.raises(SystemExit) as exc:
        genforge(["pipeline", "compile", *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.count("\n") == 1 and err.startswith("genforge: error: ") and message in err, err
    assert "me:secret" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_missing_kfp_is_a_spec_error_naming_the_extra(monkeypatch, tmp_path):
    import sys

    from genforge.errors import SpecError
    from pipelines.kubeflow import compile_pipeline

    monkeypatch.setitem(sys.modules, "kfp", None)  # what an install without the kubeflow extra sees
    with pytest.raises(SpecError, match=r"pip install 'genforge\[kubeflow\]'"):
        compile_pipeline(QUICKSTART, tmp_path / "p.yaml")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning")  # the local runner on a non-"python" image
def test_the_pipeline_runs_locally_from_training_to_the_champion(tmp_path, monkeypatch):
    """Each component in a subprocess of this interpreter: train (a private Ray: RAY_ADDRESS unset), evaluate,
    register, promote, the results handed on as KFP outputs; MLflow then holds what `genforge run` leaves."""
    import kfp.local
    from mlflow import MlflowClient

    from pipelines.kubeflow import build_pipeline

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = tiny_spec("kfp-local", "vae", epochs=1, max_steps_per_epoch=4, storage_path=str(tmp_path / "runs"))
    spec.update(
        stages=["train", "evaluate", "register", "promote"],
        evaluate={"samples": 50, "seeds": 1, "kid_subsets": 2, "kid_subset_size": 20, "iw_samples": 1,
                  "extractor_epochs": 1},
        register={"model_name": "kfp-local-vae"},
        tracking={"uri": tracking_uri},
    )
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    outputs = build_pipeline(spec)().outputs

    client = MlflowClient(tracking_uri)
    run = client.get_run(outputs["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags.get("genforge.eval.protocol_name") == outputs["protocol"]
    version = client.get_model_version("kfp-local-vae", str(outputs["version"]))
    assert version.run_id == outputs["run_id"] and outputs["model_uri"] == "models:/kfp-local-vae/1"
    assert outputs["promoted"], outputs["reason"]  # a fresh store: no holder to beat
    assert int(client.get_model_version_by_alias("kfp-local-vae", "champion").version) == outputs["version"] == 1
    assert outputs["champion_uri"] == "models:/kfp-local-vae@champion"
