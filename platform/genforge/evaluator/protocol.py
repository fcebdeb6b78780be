"""The evaluation protocol: everything a number depends on. Numbers with different protocol hashes
are never compared (promotion refuses them)."""

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

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def name(self) -> str:
        """A readable name carrying the protocol, e.g. fid10k-domain-train."""
        n = f"{self.samples // 1000}k" if self.samples % 1000 == 0 else str(self.samples)
        return f"fid{n}-{self.extractor}-{self.split}"

    def as_dict(self) -> dict:
        return {**asdict(self), "seeds": list(self.seeds), "hash": self.hash(), "name": self.name()}
