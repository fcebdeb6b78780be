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


def test_quickstart_is_the_demo():
    spec = load_spec(SPEC_DIR / "quickstart.yaml")
    assert spec.model.family == "vae" and spec.data.dataset == "mnist5k" and spec.train.workers == 2
    assert spec.stages == ["tune", "evaluate", "register", "promote"]
    assert "genforge run pipelines/quickstart.yaml" in (Path(__file__).parents[1] / "Makefile").read_text()


def test_readme_documents_every_command_family_and_dataset():
    from genforge.cli import cli
    from genforge.data import DATASETS
    from genforge.models import FAMILIES
    import pipelines.cli  # noqa: F401 - registers `run`

    for command in cli.commands:
        assert f"genforge {command}" in README, command
    for name in (*DATASETS, *FAMILIES):
        assert f"`{name}`" in README, name
