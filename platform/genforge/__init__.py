"""genforge: train, tune, evaluate and ship image generative models with Ray and MLflow."""

__version__ = "0.1.0"
