"""Feature extractors: images in [0, 1] (N, C, H, W) -> features (N, d) and class probabilities.

`domain`: a small CNN classifier trained on the dataset itself (fast on CPU, any resolution).
`inception`: the TF-ported FID Inception-v3 (torch-fidelity), from a local, sha256-verified file.
"""

from evaluation.extractors.base import FeatureExtractor
from evaluation.extractors.domain import DomainClassifier, DomainExtractor, train_domain_classifier
from evaluation.extractors.inception import INCEPTION_FILE, INCEPTION_SHA256, InceptionExtractor

__all__ = [
    "DomainClassifier",
    "DomainExtractor",
    "FeatureExtractor",
    "INCEPTION_FILE",
    "INCEPTION_SHA256",
    "InceptionExtractor",
    "train_domain_classifier",
]
