"""Benchmark input: camera-sized uint8 frames that look like pictures, not noise.

Timing must include the preprocessing a real frame needs (a 640x480 frame resized to the encoder's 224), so
the input is a full-size frame. Pure noise would be unrealistic for the video codec of the camera-loop test
(it would measure the decoder on incompressible data), so frames are smooth colour fields with a few
blobs, moving from frame to frame, and a little noise. Deterministic: the same seed gives the same frames.
"""

from __future__ import annotations

import numpy as np


def parse_frame_size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480) as (width, height)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"frame size must look like 640x480 (WIDTHxHEIGHT), got {text!r}") from None
    if w < 8 or h < 8:
        raise ValueError(f"frame size must be at least 8x8, got {text!r}")
    return w, h


def synthetic_frames(n: int, width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    """N x H x W x 3 uint8 frames (BGR, as OpenCV delivers them)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy /= max(height - 1, 1)
    xx /= max(width - 1, 1)
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    base = rng.uniform(40, 200, size=3).astype(np.float32)
    blobs = rng.uniform(0, 1, size=(4, 2)).astype(np.float32)
    colours = rng.uniform(-90, 90, size=(4, 3)).astype(np.float32)
    for i in range(n):
        t = i / max(n, 1)
        img = base + 50 * (xx[..., None] - 0.5) * np.array([1, -0.5, 0.3], np.float32) + 40 * (yy[..., None] - 0.5)
        for (bx, by), col in zip(blobs, colours):
            cx, cy = (bx + 0.3 * t) % 1.0, (by + 0.2 * np.sin(6.28 * t)) % 1.0
            d2 = (xx - cx) ** 2 + ((yy - cy) * height / width) ** 2
            img += np.exp(-d2 / 0.01)[..., None] * col
        img += rng.normal(0, 4, size=img.shape).astype(np.float32)
        np.clip(img, 0, 255, out=img)
        out[i] = img.astype(np.uint8)
    return out
