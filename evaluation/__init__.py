"""Metrics and feature statistics for generative models: pure functions over arrays.

Depends on numpy, scipy (and torch for feature extractors) only; never on genforge, Ray or MLflow.
Each module states the formula it computes and cites its paper; the README's "Evaluating a model" table lists
them with their references.
"""

from evaluation.checks import MetricInputError
from evaluation.diversity import class_coverage, mean_pairwise_distance, per_class_pairwise_distance
from evaluation.fid import frechet_distance
from evaluation.image_quality import bce, mse, psnr, ssim
from evaluation.inception_score import inception_score
from evaluation.kid import kid
from evaluation.likelihood import bits_per_dim, iw_nll
from evaluation.prdc import density_coverage, precision_recall
from evaluation.recognition import per_label_accuracy, recognisable, worst_label_accuracy
from evaluation.stats import FeatureStats, feature_stats

__all__ = [
    "FeatureStats",
    "MetricInputError",
    "bce",
    "bits_per_dim",
    "class_coverage",
    "density_coverage",
    "feature_stats",
    "frechet_distance",
    "inception_score",
    "iw_nll",
    "kid",
    "mean_pairwise_distance",
    "mse",
    "per_label_accuracy",
    "per_class_pairwise_distance",
    "precision_recall",
    "psnr",
    "recognisable",
    "ssim",
    "worst_label_accuracy",
]
