"""genforge: train, tune, evaluate and ship image generative models with Ray and MLflow.

The Python API (each function returns the dataclass its command prints with --json):
`train`, `tune`, `evaluate`, `register`, `promote`, `rollback`, `generate`, `load_model`, `list_models`.
The command line (`pipelines/cli.py`) is a thin layer over these; `pipelines.run` composes them into a pipeline.
"""

from genforge.api import evaluate, generate, list_models, load_model, promote, register, rollback, train, tune

__version__ = "0.1.0"

__all__ = [
    "evaluate",
    "generate",
    "list_models",
    "load_model",
    "promote",
    "register",
    "rollback",
    "train",
    "tune",
    "__version__",
]
