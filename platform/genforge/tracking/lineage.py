"""Lineage: what a run and a registered version record so a champion can be traced and rebuilt.

Every run records the genforge version, the git commit of the code, the sha256 of constraints.txt (every
dependency's exact version), the container image when in one, and its dataset as an MLflow dataset input
(name, content fingerprint, source, split sizes). Where the code runs away from its checkout (a submitted Ray
job ships the packages without `.git`; an image has no checkout), the facts come from the environment:
`genforge submit` sets GENFORGE_GIT_COMMIT and GENFORGE_CONSTRAINTS_SHA256 from the submitter's checkout, and the
Dockerfile bakes the commit and GENFORGE_IMAGE in at build time and points GENFORGE_CONSTRAINTS_FILE at its copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import genforge

COMMIT_ENV, CONSTRAINTS_ENV, IMAGE_ENV = "GENFORGE_GIT_COMMIT", "GENFORGE_CONSTRAINTS_SHA256", "GENFORGE_IMAGE"
CONSTRAINTS_FILE_ENV = "GENFORGE_CONSTRAINTS_FILE"
_CHECKOUT = Path(genforge.__file__).resolve().parents[2]  # platform/genforge/__init__.py -> the repository root
UNKNOWN = "unknown"


def git_commit() -> str:
    """The commit of the checkout genforge runs from (with `+dirty` when it has uncommitted changes)."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_CHECKOUT, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return UNKNOWN
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=_CHECKOUT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN


def constraints_sha256() -> str:
    """sha256 of constraints.txt: given (a submitted job), the image's copy, or the checkout's."""
    if os.environ.get(CONSTRAINTS_ENV):
        return os.environ[CONSTRAINTS_ENV]
    path = Path(os.environ.get(CONSTRAINTS_FILE_ENV) or _CHECKOUT / "constraints.txt")
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else UNKNOWN


def code_facts() -> dict[str, str]:
    """The facts a submitted job carries in its environment (none of them secret)."""
    return {COMMIT_ENV: git_commit(), CONSTRAINTS_ENV: constraints_sha256()}


def lineage_tags() -> dict[str, str]:
    """Run tags: MLflow's own git-commit tag, and genforge's version, constraints hash and image."""
    tags = {"mlflow.source.git.commit": git_commit(), "genforge.version": genforge.__version__,
            "genforge.constraints_sha256": constraints_sha256()}
    if os.environ.get(IMAGE_ENV):
        tags["genforge.image"] = os.environ[IMAGE_ENV]
    return tags


def dataset_input(name: str, fingerprint: str, source: dict[str, Any], sizes: dict[str, int]) -> Any:
    """The run's dataset as an MLflow dataset input (shown under the run's Datasets; `mlflow.log_input`'s entity):
    the content fingerprint is its digest, so two runs on the same images share one dataset."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(name=name, digest=fingerprint, source_type="genforge",
                      source=json.dumps(source, sort_keys=True), profile=json.dumps(sizes))
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])
