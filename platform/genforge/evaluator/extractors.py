"""Getting a feature extractor for a dataset: the domain classifier (trained once per dataset and
seed, then cached) or the FID Inception network from a verified local file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

from evaluation.extractors import DomainClassifier, DomainExtractor, InceptionExtractor, train_domain_classifier
from evaluation.extractors.inception import InceptionWeightsError
from genforge.data import ImageSplits
from genforge.errors import SpecError
from genforge.evaluator.cache import cache_dir, publish_dir, staging_dir

DOMAIN_SEED = 0  # fixed: the extractor is part of the protocol, not of the model under test


def domain_dir(data: ImageSplits, epochs: int) -> Path:
    return cache_dir() / "extractors" / f"domain-{data.name}-{data.fingerprint()}-e{epochs}-s{DOMAIN_SEED}"


def load_domain(directory: Path, device: str | torch.device = "cpu") -> tuple[DomainExtractor, dict]:
    return domain_from_files(domain_files(directory), device, where=str(directory))


def domain_files(directory: Path) -> dict[str, bytes]:
    """The cached extractor's files as bytes: what travels to Ray workers, which may not share this disk."""
    return {name: (directory / name).read_bytes() for name in ("meta.json", "weights.safetensors")}


def domain_from_files(files: dict[str, bytes], device: str | torch.device = "cpu",
                      where: str = "domain extractor") -> tuple[DomainExtractor, dict]:
    """The extractor from its files' bytes (safetensors: no pickle), checked against its recorded content hash."""
    from safetensors.torch import load

    meta = json.loads(files["meta.json"])
    model = DomainClassifier(tuple(meta["image_shape"]), meta["num_classes"])
    model.load_state_dict(load(files["weights.safetensors"]))
    extractor = DomainExtractor(model, device)
    if extractor.content_hash != meta["content_hash"]:
        raise RuntimeError(f"{where}: weights do not match their recorded hash; delete the directory to retrain")
    return extractor, meta


STREAMED_CLASSIFIER_IMAGES = 20_000  # a streamed folder's domain classifier trains on this many images at most


def _classifier_rows(split) -> torch.Tensor:
    """The rows the domain classifier is trained or tested on: all of an in-memory split; of a streamed folder's
    (data.streaming), the first STREAMED_CLASSIFIER_IMAGES of the split's seeded order, so evaluating a folder too
    large for memory never decodes all of it at once."""
    from genforge.data.streaming import StreamedSplit

    n = min(len(split), STREAMED_CLASSIFIER_IMAGES) if isinstance(split, StreamedSplit) else len(split)
    return torch.arange(n)


def domain_extractor(
    data: ImageSplits, epochs: int, echo: Callable[[str], None] = print
) -> tuple[DomainExtractor, dict, Path]:
    """The cached domain classifier of this dataset, trained (on the train split, fixed seed) on first use."""
    final = domain_dir(data, epochs)
    if not (final / "meta.json").is_file():
        echo(f"[genforge] training the domain feature extractor for {data.name} ({epochs} epochs, cached in {final})")
        t0 = time.perf_counter()
        tx, ty = data.train.batch(_classifier_rows(data.train))
        vx, vy = data.test.batch(_classifier_rows(data.test))
        model, accuracy = train_domain_classifier(tx, ty, vx, vy, data.num_classes, epochs=epochs, seed=DOMAIN_SEED)
        tmp = staging_dir(final)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "weights.safetensors")
        meta = {
            "dataset": data.name,
            "dataset_fingerprint": data.fingerprint(),
            "image_shape": list(data.image_shape),
            "num_classes": data.num_classes,
            "epochs": epochs,
            "seed": DOMAIN_SEED,
            "test_accuracy": accuracy,
            "content_hash": DomainExtractor(model).content_hash,
            "train_seconds": time.perf_counter() - t0,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        publish_dir(tmp, final)
        echo(f"[genforge] domain extractor: test accuracy {accuracy:.4f} in {meta['train_seconds']:.1f} s")
    extractor, meta = load_domain(final)
    return extractor, meta, final


def inception_extractor(
    weights: str | None, sha256: str | None, device: str | torch.device = "cpu"
) -> InceptionExtractor:
    path = weights or os.environ.get("GENFORGE_INCEPTION_WEIGHTS")
    try:
        return InceptionExtractor(path, sha256=sha256, device=device)
    except InceptionWeightsError as exc:
        raise SpecError(f"evaluate.inception_weights: {exc}") from None


def get_extractor(cfg, data: ImageSplits, echo: Callable[[str], None] = print):
    """(extractor, info) for the spec's `evaluate` section; info describes it for the protocol."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # `dataset_classes`: the extractor's class probabilities are the dataset's labels, so class coverage and the
    # accuracy of conditional samples can be read off them (the domain classifier's are; Inception's are ImageNet's).
    if cfg.extractor == "inception":
        ex = inception_extractor(cfg.inception_weights, cfg.inception_sha256, device)
        return ex, {"name": ex.name, "content_hash": ex.content_hash, "dataset_classes": False}
    ex, meta, path = domain_extractor(data, cfg.extractor_epochs, echo)
    return ex, {
        "name": ex.name,
        "content_hash": ex.content_hash,
        "test_accuracy": meta["test_accuracy"],
        "path": str(path),
        "dataset_classes": True,
    }
