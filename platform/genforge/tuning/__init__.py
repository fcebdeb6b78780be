"""Hyperparameter sweeps with Ray Tune: each trial is a Tune function that fits a TorchTrainer."""
