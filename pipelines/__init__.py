"""The top layer: pipeline specs (*.yaml), `run` (stages composed from genforge's API) and the command line.

    from pipelines import run
    from genforge.config import load_spec
    result = run(load_spec("pipelines/quickstart.yaml"))
"""

from pathlib import Path

from pipelines.pipeline import PipelineResult, run

SPEC_DIR = Path(__file__).parent

__all__ = ["SPEC_DIR", "PipelineResult", "run"]
