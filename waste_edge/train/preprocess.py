"""Preprocessing specs as data, and their reference implementation on PIL images.

An encoder's preprocessing is described by a `PreprocessSpec` so that export can rebuild exactly the same
steps inside the fused ONNX graph, and the reference pipeline (training, `parity`) runs them on PIL as the
study did. The spec and its geometry (the two resize modes, `resize_crop`) live in `data/geometry.py`, where
the runtime can use them too; this module adds the normalisation and what an encoder sees.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from waste_edge.data.geometry import RESIZE_MODES, PreprocessSpec, box_crop_geometry, resize_crop, shortest_side_size

__all__ = ["GEOMETRY_VERSION", "RESIZE_MODES", "PreprocessSpec", "box_crop_geometry", "encoder_input", "normalise",
           "reference_preprocess", "resize_crop", "shortest_side_size"]

# Bumped whenever a resize mode's geometry changes, so cached embeddings of the old geometry are not reused.
GEOMETRY_VERSION = 2


def normalise(rgb_uint8: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """HxWx3 uint8 RGB -> 3xHxW float32, (x/255 - mean) / std."""
    x = rgb_uint8.astype(np.float32) / 255.0
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def reference_preprocess(img: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """The spec applied on PIL, as the training and parity reference: 3 x size x size float32."""
    return normalise(np.asarray(resize_crop(img.convert("RGB"), spec), dtype=np.uint8), spec)


def encoder_input(img: Image.Image, spec: PreprocessSpec, transform: Any = None) -> np.ndarray:
    """What an encoder sees for one RGB PIL image: its own transform when it has one (open_clip's), else the
    spec on PIL. 3 x S x S float32. One function for the reference path and every extraction runner."""
    if transform is not None:
        return np.asarray(transform(img), dtype=np.float32)
    return reference_preprocess(img, spec)
