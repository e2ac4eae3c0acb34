"""The reference pipeline of a run (DESIGN.md contract 3): the study's own path, the yardstick every
exported variant is checked (`parity`) and timed (`bench`) against.

For a linear run: decode with PIL, the encoder's own preprocessing (open_clip's transform for CLIP), the
PyTorch encoder, scikit-learn's `predict_proba` on the head. For a Keras baseline: the Keras model itself
on the same crop. Both answer the same questions (which run and head they stand for, the probabilities and
embedding of an image, the uint8 crop their preprocessing produces), so callers do not care which kind
of model they hold. torch, sklearn and TensorFlow are imported only when a reference is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


class ReferencePipeline:
    """The study's path for a linear run: PIL preprocessing, PyTorch encoder, sklearn predict_proba.

    Every reference (this one, the Keras one) answers the same questions: which run and head it stands for,
    the probabilities (and embedding, where there is one) of a PIL image, and the uint8 crop its
    preprocessing produces, so `run_parity` does not care which kind of model it checks.
    """

    def __init__(self, run: Any, threads: int = 2) -> None:
        """`threads`: torch intra-op threads while this reference lives (restored by `close`)."""
        import torch

        from waste_edge.train.encoders import create_encoder

        self.run = run
        self.path, self.classes, self.encoder_id, self.head_sha256 = run.path, run.classes, run.encoder_id, run.head.sha256()
        self.encoder = create_encoder(run.encoder_id, relative_to=run.path)
        expected = run.card.get("encoder", {}).get("weights", {}).get("sha256")
        if expected != self.encoder.weights.get("sha256"):
            from waste_edge.train.encoders import EncoderError

            raise EncoderError(f"{run.path}: the encoder weights found here differ from the run's (sha256 {expected})")
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


class KerasReferenceAdapter:
    """A Keras baseline's reference for parity: the Keras model itself on the same PIL crop (no embedding)."""

    def __init__(self, run: Any, threads: int = 2) -> None:
        from waste_edge.train.baselines import KerasReference

        self.ref = KerasReference(run, threads)
        self.path, self.classes, self.encoder_id, self.head_sha256 = run.path, run.classes, run.encoder_id, run.model_sha256

    def close(self) -> None:
        pass

    def crop_uint8(self, img: Any) -> np.ndarray:
        return self.ref.crop_uint8(img)

    def __call__(self, img: Any) -> tuple[np.ndarray, np.ndarray | None]:
        return self.ref.proba([img])[0], None

    def predict_proba(self, frames_rgb: Sequence[np.ndarray]) -> np.ndarray:
        from PIL import Image

        return self.ref.proba([Image.fromarray(f) for f in frames_rgb])

    def size_mb(self) -> float:
        return self.ref.run.model_path.stat().st_size / 1e6


def open_reference(run_dir: str | Path, threads: int = 2) -> ReferencePipeline | KerasReferenceAdapter:
    """The reference pipeline for a run directory of any kind (the card says which)."""
    from waste_edge.train.run import load_run, read_card

    if read_card(run_dir).get("kind") == "keras":
        from waste_edge.train.baselines import load_keras_run

        return KerasReferenceAdapter(load_keras_run(run_dir), threads)
    return ReferencePipeline(load_run(run_dir), threads)
