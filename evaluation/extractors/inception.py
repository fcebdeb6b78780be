"""The FID Inception-v3 (the TF-ported 2015-12-05 graph) through torch-fidelity, loaded safely.

torch-fidelity's constructor `torch.load`s the weights file with `weights_only=False`, i.e. it
unpickles whatever it is given. So the file is first checked against the published sha256, then its
state dict is read with `weights_only=True` (tensors only), re-saved by us to a private temporary
file, and only that file is handed to torch-fidelity. A user's file never reaches the unpickler.
torchvision's IMAGENET1K_V1 Inception is a different network and gives different FIDs: not used.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from evaluation.extractors.base import batched

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
# The published weights (torch-fidelity's release asset; its name carries the first 8 hex digits).
INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"


class InceptionWeightsError(FileNotFoundError):
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class InceptionExtractor:
    name = "inception"

    def __init__(self, weights_path: str | os.PathLike | None, *, sha256: str | None = None,
                 device: str | torch.device = "cpu", batch_size: int = 64) -> None:
        if not weights_path or not Path(weights_path).is_file():
            raise InceptionWeightsError(
                f"Inception FID weights not found ({weights_path or 'no path given'}): the file {INCEPTION_FILE} "
                f"(sha256 {INCEPTION_SHA256[:12]}...) is needed; "
                "set evaluate.inception_weights or GENFORGE_INCEPTION_WEIGHTS"
            )
        path = Path(weights_path)
        expected = sha256 or INCEPTION_SHA256
        actual = _sha256(path)
        if actual != expected:
            raise InceptionWeightsError(
                f"{path}: sha256 {actual[:12]}... does not match the expected {expected[:12]}..."
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        with tempfile.TemporaryDirectory() as tmp:
            clean = Path(tmp) / "state.pth"
            torch.save({k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, clean)
            self.model = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(clean)
            )
        self.model.eval().to(device)
        self.device, self.batch_size = torch.device(device), batch_size
        self.content_hash = actual[:16]

    def _uint8_rgb(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    def features_and_probs(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        def both(x: torch.Tensor) -> torch.Tensor:
            feats, logits = self.model(self._uint8_rgb(x))
            return torch.cat([feats, logits], dim=1)

        out = torch.cat(batched(both, images, self.batch_size, self.device)).double()
        return out[:, :2048].numpy(), torch.softmax(out[:, 2048:], dim=1).numpy()

    def features(self, images: torch.Tensor) -> np.ndarray:
        return self.features_and_probs(images)[0]

    def probs(self, images: torch.Tensor) -> np.ndarray:
        return self.features_and_probs(images)[1]
