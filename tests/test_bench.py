"""The benchmark harness (benchmarks/): its results file, and the Fréchet and agreement benchmarks at tiny sizes.

`make test` does not install the `bench` extra; the comparisons against torchmetrics and prdc are skipped (with
the reason) where those packages are missing. The speed targets are for the full sizes (`make bench`): here only
the agreement (<= 1e-9) is checked.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # `benchmarks` is not installed: it lives at the repository root

from benchmarks import frechet, report, run  # noqa: E402
from benchmarks.demo import stage_times  # noqa: E402
from benchmarks.subproc import CliRun  # noqa: E402
from benchmarks.throughput import steady_rates  # noqa: E402

ENTRY_KEYS = {"name", "value", "unit", "target", "met"}


def _needs(*packages: str) -> None:
    for name in packages:
        pytest.importorskip(name, reason=f"{name} is in the `bench` extra (pip install -e '.[bench]'), not `test`")


def _check_schema(doc: dict) -> None:
    assert {"cpu", "cores", "torch", "ray", "mlflow", "gpu"} <= set(doc["machine"])
    for e in doc["entries"]:
        assert ENTRY_KEYS <= set(e), e
        assert isinstance(e["name"], str) and isinstance(e["unit"], str)
        assert e["value"] is None or isinstance(e["value"], float | int)
        assert e["met"] in (True, False, None)
        if e["target"] is None or e["value"] is None:
            assert e["met"] is None


def test_report_merges_families_and_marks_missed_targets(tmp_path):
    first = [report.Entry("fast_enough", 12.0, "x", ">= 10", family="a"),
             report.Entry("too_slow", 2.0, "x", ">= 5", family="a", spread={"q1": 1.5, "q3": 2.5}, repeats=3),
             report.Entry("no_gpu", None, "img/s", family="a", note="no GPU")]
    report.write(first, ["a"], tmp_path)
    report.write([report.Entry("close", 1e-12, "relative", "<= 1e-9", family="b")], ["b"], tmp_path)
    doc = json.loads((tmp_path / "latest.json").read_text())
    _check_schema(doc)
    verdicts = {e["name"]: e["met"] for e in doc["entries"]}
    assert verdicts == {"fast_enough": True, "too_slow": False, "no_gpu": None, "close": True}
    assert set(doc["runs"]) == {"a", "b"}
    table = (tmp_path / "latest.md").read_text()
    assert "| too_slow | 2 | x | >= 5 | **MISSED** | IQR 1.5 .. 2.5 (n=3) |" in table
    assert "| no_gpu | n/a | img/s |  | - |" in table
    report.write([report.Entry("fast_enough", 20.0, "x", ">= 10", family="a")], ["a"], tmp_path)  # a re-run of a
    names = [e["name"] for e in json.loads((tmp_path / "latest.json").read_text())["entries"]]
    assert sorted(names) == ["close", "fast_enough"]


def test_frechet_agrees_with_sqrtm():
    entries = {e.name: e for e in frechet.run(dim=32, samples=128, repeats=2)}
    agreement = entries["frechet_max_rel_difference"]
    assert agreement.value <= 1e-9 and agreement.met is True
    for name in ("frechet_speedup_from_features", "frechet_speedup_cached_stats"):
        assert entries[name].value > 0 and entries[name].repeats == 2 and entries[name].target


def test_agreement_with_torchmetrics_and_prdc():
    _needs("torchmetrics", "prdc")
    from benchmarks import agreement

    entries = {e.name: e for e in agreement.run(n=400, dim=8, subsets=5, subset_size=50, repeats=1)}
    for name in ("kid_max_rel_difference_vs_torchmetrics", "prdc_max_abs_difference_vs_prdc"):
        assert entries[name].value is not None and entries[name].value <= 1e-9, entries[name]
        assert entries[name].met is True


def test_quick_run_writes_the_results_file(tmp_path, capsys):
    families = ["frechet"]
    try:
        import prdc  # noqa: F401
        import torchmetrics  # noqa: F401

        families.append("agreement")
    except ImportError:
        pass
    assert run.main(["--only", *families, "--quick", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "latest.json").read_text())
    _check_schema(doc)
    assert set(doc["runs"]) == set(families) and all(r["mode"] == "quick" for r in doc["runs"].values())
    speed = [e for e in doc["entries"] if e["unit"] == "x" and e["target"]]
    assert speed and all(e["met"] is None for e in speed)  # quick sizes: speed targets are not judged
    assert "frechet_max_rel_difference" in (tmp_path / "latest.md").read_text()
    assert "[bench]" in capsys.readouterr().out


def test_demo_stages_are_read_off_the_stage_lines():
    lines = [(2.0, "[genforge] === stage: tune ==="), (50.0, "[genforge] trial a: epoch 1/3 done"),
             (90.0, "[genforge] retraining the best configuration for 5 epochs"),
             (150.0, "[genforge] === stage: evaluate ==="), (190.0, "[genforge] === stage: register ==="),
             (195.0, "[genforge] === stage: promote ==="), (196.5, "[genforge] PROMOTED: no version held the alias"),
             (199.0, '{"name": "quickstart-vae"}')]
    times = stage_times(CliRun(["run"], 0, 200.0, lines))
    assert times == pytest.approx({"startup": 2.0, "sweep": 88.0, "retrain": 60.0, "evaluate": 40.0, "register": 5.0,
                                   "promote": 1.5, "finish": 3.5})
    assert "retrain" not in stage_times(CliRun(["run"], 0, 200.0, [lines[0], lines[3]]))


def test_steady_rates_skip_warm_up_and_epoch_ends():
    # 30 steps of 0.1 s, an epoch end (a 5 s pause) before step 30, 30 more steps.
    starts = [0.1 * i for i in range(30)] + [3.0 + 5.0 + 0.1 * i for i in range(30)]
    rates = steady_rates({"step_starts": starts, "epoch_ends": [30]}, images_per_step=64)
    assert len(rates) == 3 and all(r == pytest.approx(640.0) for r in rates)


@pytest.mark.parametrize("kind", ["gan", "vae"])
def test_genforge_s_trainer_steps_in_process_on_the_shipped_spec(kind, tmp_path):
    """The throughput family's in-process side: genforge's trainer on the shipped spec (the quickstart's cosine
    schedule needs the loop's length) and the bare loop each give steady-state windows."""
    from benchmarks.throughput import WINDOW, local_rates, spec_for

    spec = spec_for(kind, 1, tmp_path, 4, 1, "test")
    for genforge_trainer in (True, False):
        rates, _ = local_rates(kind, spec, 8, WINDOW, 1, genforge_trainer)
        assert rates and all(r > 0 for r in rates)


def test_a_failed_family_fails_the_run(tmp_path, monkeypatch, capsys):
    def crash(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(run, "_run_family", crash)
    assert run.main(["--only", "frechet", "--quick", "--out", str(tmp_path)]) == 1
    assert "[bench] FAILED (traceback above): frechet" in capsys.readouterr().out
