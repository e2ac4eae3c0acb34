"""The reference pipeline of a Keras run (ARCHITECTURE.md, contract 3): PIL decode -> box_crop -> the Keras model itself.

It answers the same questions as the linear runs' `ReferencePipeline` (`train.reference.Reference`), so
`parity` and `bench` do not care which kind of run they compare against. A baseline has no embedding.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from waste_edge.train.keras.archs import predict_images
from waste_edge.train.preprocess import resize_crop


class KerasReference:
    def __init__(self, run: Any, threads: int | None = 2) -> None:
        self.run = run
        self.path, self.classes, self.encoder_id, self.head_sha256 = run.path, run.classes, run.encoder_id, run.head_sha256
        self.spec = run.spec
        self.model = run.load_model(threads)

    def close(self) -> None:
        pass

    def crop_uint8(self, img: Any) -> np.ndarray:
        """The geometric part alone (3 x S x S uint8 RGB): what the fused graph's `pixels` stage should hold."""
        return np.asarray(resize_crop(img.convert("RGB"), self.spec), dtype=np.uint8).transpose(2, 0, 1)

    def proba(self, images: Sequence[Any]) -> np.ndarray:
        """Probabilities [N, K] of PIL RGB images, exactly as training and evaluation computed them."""
        crops = np.stack([np.asarray(resize_crop(im.convert("RGB"), self.spec), dtype=np.uint8) for im in images])
        return predict_images(self.model, crops)

    def __call__(self, img: Any) -> tuple[np.ndarray, np.ndarray | None]:
        return self.proba([img])[0], None

    def predict_proba(self, frames_rgb: Sequence[np.ndarray]) -> np.ndarray:
        from PIL import Image

        return self.proba([Image.fromarray(f) for f in frames_rgb])

    def size_mb(self) -> float:
        return self.run.model_path.stat().st_size / 1e6
