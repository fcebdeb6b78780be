"""Training: the Ray Train driver, the worker loop, the `Trainer` interface and its two patterns, checkpoints."""
