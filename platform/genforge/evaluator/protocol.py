"""The evaluation protocol: everything a number depends on. Numbers with different protocol hashes
are never compared (promotion refuses them).

A likelihood model's protocol also names its likelihood and the discretisation of the data it is scored on
(evaluator/likelihood_eval.py): an NLL of binarised data and one of 8-bit data are different numbers. Models
without a likelihood leave both None, and None fields stay out of the hash, so a GAN's protocol hash is what it was
before these fields existed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Protocol:
    dataset: str
    dataset_fingerprint: str
    split: str
    reference_n: int
    samples: int
    seeds: tuple[int, ...]
    extractor: str
    extractor_hash: str
    kid_subsets: int
    kid_subset_size: int
    likelihood: str | None = None  # VAEs: bernoulli, gaussian or laplace
    discretisation: str | None = None  # VAEs: e.g. binarised-seed0, 8bit-discretised

    def hash(self) -> str:
        fields = {k: v for k, v in asdict(self).items() if v is not None}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]

    def name(self) -> str:
        """A readable name carrying the protocol, e.g. fid10k-domain-train."""
        n = f"{self.samples // 1000}k" if self.samples % 1000 == 0 else str(self.samples)
        return f"fid{n}-{self.extractor}-{self.split}"

    def as_dict(self) -> dict:
        return {**asdict(self), "seeds": list(self.seeds), "hash": self.hash(), "name": self.name()}
