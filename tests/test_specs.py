"""Every shipped spec validates, and the registries, CLI and README agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from genforge.config import load_spec
from pipelines import SPEC_DIR

SPECS = sorted(SPEC_DIR.glob("*.yaml"))
README = (Path(__file__).parents[1] / "README.md").read_text()


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_shipped_specs_validate(path):
    spec = load_spec(path)
    assert spec.name and spec.stages


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_shipped_specs_gate_promotion_on_metrics_their_evaluation_measures(path):
    """Every spec gates on the FID ratio; conditional ones on the worst label's accuracy; metrics read off the
    classifier only where its classes are the dataset's (a gate on a metric never measured would never pass)."""
    from genforge.model_registry.gates import gates_from_mapping
    from genforge.model_registry.promotion import METRIC_DIRECTION

    spec = load_spec(path)
    gates = {g.metric: g for g in gates_from_mapping(spec.promote.gates)}
    assert "fid_ratio" in gates and gates["fid_ratio"].op in ("<=", "<")
    for g in gates.values():  # each gate asks for the better side of its metric
        assert g.op in (("<=", "<") if METRIC_DIRECTION[g.metric] == "min" else (">=", ">")), g
    if spec.model.family in ("cgan", "cvae"):
        assert "cond_accuracy_min" in gates
    if spec.evaluate.extractor != "domain":
        assert not {"recognisable", "class_coverage", "cond_accuracy_min", "cond_accuracy"} & set(gates)


def test_quickstart_is_the_demo():
    spec = load_spec(SPEC_DIR / "quickstart.yaml")
    assert spec.model.family == "vae" and spec.data.dataset == "mnist5k" and spec.train.workers == 2
    assert spec.stages == ["tune", "evaluate", "register", "promote"]
    assert "genforge run pipelines/quickstart.yaml" in (Path(__file__).parents[1] / "Makefile").read_text()


def test_readme_documents_every_dataset():
    from genforge.data import DATASETS

    for name in DATASETS:
        assert f"`{name}`" in README, name


def test_the_catalogue_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, genforge.families, genforge.config; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


@pytest.mark.parametrize(
    "tree,needle",
    [
        (
            {"model": {"family": "diffusion"}},
            "model.family: unknown family 'diffusion' (choose from gan, vae, cgan, cvae)",
        ),
        ({"model": {"diffaugment": "color,rotate"}}, "model.diffaugment: unknown policy 'rotate'"),
        ({"tracking": {"experiment": "../../outside"}}, "tracking.experiment: '../../outside' is not a valid name"),
        ({"tracking": {"experiment": "/abs/path"}}, "tracking.experiment: '/abs/path'"),
        ({"register": {"model_name": "team/model"}}, "register.model_name: 'team/model'"),
        ({"register": {"model_name": "a:b"}}, "register.model_name: 'a:b'"),
        ({"promote": {"alias": "latest"}}, "promote.alias: 'latest' is reserved"),
        ({"promote": {"alias": "v1"}}, "promote.alias: 'v1' is reserved"),
        ({"tune": {"metric": "val_neg_elbow"}}, "tune.metric: 'val_neg_elbow' is not reported by vae trials"),
        (
            {"model": {"family": "gan"}, "tune": {"metric": "val_neg_elbo"}},
            "tune.metric: 'val_neg_elbo' is not reported",
        ),
    ],
)
def test_names_and_metrics_are_checked_when_the_spec_is_read(tree, needle):
    """Caught before anything trains: these used to fail only after training, or escape their folder."""
    from genforge.config import spec_from_dict
    from genforge.errors import SpecError

    with pytest.raises(SpecError) as err:
        spec_from_dict({"name": "n", **tree})
    assert needle in str(err.value)


def test_family_defaults_come_from_the_catalogue():
    from genforge.config import spec_from_dict
    from genforge.families import FAMILIES
    from genforge.tuning.space import objective, space_entries

    for name, info in FAMILIES.items():
        spec = spec_from_dict({"name": "n", "model": {"family": name}})
        assert objective(spec) == info.training.tune_metric
        assert set(space_entries(spec)) == set(info.training.search_space)
        assert spec.model.conditional == info.conditional
