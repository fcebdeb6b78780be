"""Training: the Ray Train driver, the worker loop, the two optimisation patterns, checkpoints."""
