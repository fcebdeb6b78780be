"""The MLflow model registry: register evaluated runs, promote on evidence, roll back, list, generate."""
