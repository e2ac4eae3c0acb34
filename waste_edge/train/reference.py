"""The reference pipeline of a run (ARCHITECTURE.md, contract 3): the study's own path, the yardstick every
exported variant is checked (`parity`) and timed (`bench`) against. `Run.reference()` builds it.

For a linear run: decode with PIL, the encoder's own preprocessing (open_clip's transform for CLIP), the
PyTorch encoder, scikit-learn's `predict_proba` on the head. For a Keras baseline: the Keras model itself on
the same crop (`train.keras.reference`). Both answer the questions of `Reference`, so callers do not care
which kind of run they hold. torch, sklearn and TensorFlow are imported only when a reference is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np


class Reference(Protocol):
    """What parity and the benchmark ask of a run's reference pipeline."""

    path: Path
    classes: list[str]
    encoder_id: str
    head_sha256: str  # the model the reference stands for, as the exported metadata names it

    def __call__(self, img: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities [K] (and the embedding, where there is one) of one PIL RGB image."""

    def crop_uint8(self, img: Any) -> np.ndarray:
        """The geometric part of the preprocessing alone: 3 x S x S uint8 RGB."""

    def predict_proba(self, frames_rgb: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities [N, K] of RGB uint8 frames, the study's way."""

    def size_mb(self) -> float:
        """The weights the study's path holds in memory."""

    def close(self) -> None:
        ...


class ReferencePipeline:
    """The study's path for a linear run: PIL preprocessing, PyTorch encoder, sklearn predict_proba."""

    def __init__(self, run: Any, threads: int = 2) -> None:
        """`run`: a `LinearRun`; `threads`: torch intra-op threads while this reference lives (restored by `close`)."""
        import torch

        self.run = run
        self.path, self.classes, self.encoder_id, self.head_sha256 = run.path, run.classes, run.encoder_id, run.head_sha256
        self.encoder = run.encoder()  # the weights it was trained with, checked against the card
        self.clf = run.head.to_sklearn()
        self._torch_threads = torch.get_num_threads()
        torch.set_num_threads(max(1, threads))

    def close(self) -> None:
        import torch

        torch.set_num_threads(self._torch_threads)

    def tensor(self, img: Any) -> np.ndarray:
        return np.asarray(self.encoder.preprocess(img), dtype=np.float32)

    def crop_uint8(self, img: Any) -> np.ndarray:
        """The geometric part alone (3 x S x S uint8 RGB), for the preprocessing-stage comparison."""
        from waste_edge.train.preprocess import resize_crop

        return np.asarray(resize_crop(img.convert("RGB"), self.encoder.spec), dtype=np.uint8).transpose(2, 0, 1)

    def embed(self, tensors: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.encoder.module(torch.from_numpy(np.ascontiguousarray(tensors))).float().numpy()

    def proba(self, features: np.ndarray) -> np.ndarray:
        return self.clf.predict_proba(self.run.head.normalise(features))

    def __call__(self, img: Any) -> tuple[np.ndarray, np.ndarray | None]:
        feats = self.embed(self.tensor(img)[None])
        return self.proba(feats)[0], feats[0]

    def predict_proba(self, frames_rgb: Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities [N, K] of RGB uint8 frames, the study's way: one PIL image per frame, one batch."""
        from PIL import Image

        return self.proba(self.embed(np.stack([self.tensor(Image.fromarray(f)) for f in frames_rgb])))

    def size_mb(self) -> float:
        """Encoder parameters and buffers plus the head: what the study's path holds in memory as weights."""
        module = self.encoder.module
        n = sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))
        return (n + (self.run.head.coef.size + self.run.head.intercept.size) * 8) / 1e6
