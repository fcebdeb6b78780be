"""The house rules: one command line on top of a library, one family catalogue, short functions.

These guard the layout the README's map describes, so that the next command, family or metric lands
in its obvious place.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).parents[1]
PACKAGES = (ROOT / "platform" / "genforge", ROOT / "evaluation", ROOT / "pipelines")
README = (ROOT / "README.md").read_text()
MAX_FUNCTION_LINES = 80


def _python_files(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*.py"))


def test_import_genforge_is_a_library_without_click_or_torch():
    code = ("import sys, genforge; fns = [genforge.train, genforge.tune, genforge.evaluate, genforge.register, "
            "genforge.promote, genforge.rollback, genforge.generate, genforge.load_model]; "
            "print(sorted(m for m in ('click', 'torch', 'ray', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


def test_the_library_never_imports_click():
    offenders = [str(p.relative_to(ROOT)) for p in _python_files(ROOT / "platform", ROOT / "evaluation")
                 if "import click" in p.read_text() or "from click" in p.read_text()]
    assert offenders == []


def test_every_click_command_lives_in_pipelines():
    """No command is defined below platform/ or evaluation/, and every command the group has is under pipelines/."""
    from pipelines.cli import cli

    for name, command in cli.commands.items():
        assert command.callback.__module__.startswith("pipelines."), (name, command.callback.__module__)
    decorated = [str(p.relative_to(ROOT)) for p in _python_files(ROOT / "platform", ROOT / "evaluation")
                 if "@click." in p.read_text() or ".command(" in p.read_text()]
    assert decorated == []


def test_help_lists_every_command_and_the_readme_documents_them():
    from pipelines.cli import cli

    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    expected = {"run", "train", "tune", "evaluate", "extractor", "register", "promote", "rollback", "models",
                "generate", "datasets", "families", "submit", "jobs", "pipeline"}
    assert set(cli.commands) == expected
    for name in expected:
        assert f"  {name} " in result.output, name
        assert f"genforge {name}" in README, name
    assert "--verbose" in result.output and "genforge [--verbose]" in README


def test_family_catalogue_cli_and_readme_agree():
    """The catalogue is the one list: `genforge families` prints it, config accepts it, the README names it."""
    from genforge.families import FAMILIES
    from genforge.models import get_family
    from pipelines.cli import cli

    listed = [line.split()[0] for line in CliRunner().invoke(cli, ["families"]).output.splitlines()]
    assert listed == list(FAMILIES)
    for name, info in FAMILIES.items():
        assert f"`{name}`" in README, name
        assert get_family(name).pattern == info.pattern  # the builders attach to the catalogue's entries
    readme_families = README.split("**Families** (`genforge families`):", 1)[1].split("\n- ", 1)[0]
    assert sorted(n for n in FAMILIES if f"`{n}`" in readme_families) == sorted(FAMILIES)


def test_module_path_is_not_a_second_command_line():
    """`python -m pipelines.cli` is the whole CLI (run included); there is no genforge.cli to drift from it."""
    out = subprocess.run([sys.executable, "-m", "pipelines.cli", "--help"], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert "  run " in out
    assert not (ROOT / "platform" / "genforge" / "cli.py").exists()


@pytest.mark.parametrize("root", PACKAGES, ids=lambda p: p.name)
def test_no_function_is_longer_than_80_lines(root):
    long = []
    for path in _python_files(root):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - start + 1})")
    assert long == []


def test_platform_is_a_source_root_not_a_package():
    assert not (ROOT / "platform" / "__init__.py").exists()
