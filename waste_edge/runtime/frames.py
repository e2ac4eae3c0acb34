"""Frame validation: the one place that decides whether an array is a frame a fused model can take.

Cameras hand out garbage now and then (None after an unplug, a greyscale frame from a misconfigured
pipeline, float arrays from user code). Each must fail with a `ValueError` that says what was wrong, so
the camera loop can count and skip it instead of dying deep inside ONNX Runtime with a shape error.
The checks are attribute look-ups only: they cost nanoseconds per frame and copy nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from waste_edge.errors import WasteEdgeError

CHANNEL_ORDERS = ("BGR", "RGB")


class FrameError(WasteEdgeError, ValueError):
    """A frame the model cannot take (None, empty, wrong dtype or channel count); the camera loop skips it."""


def check_frame(frame: Any) -> np.ndarray:
    """Return `frame` unchanged if it is an HxWx3 uint8 array, else raise `FrameError` saying why."""
    if frame is None:
        raise FrameError("frame is None (the source returned no image)")
    if not isinstance(frame, np.ndarray):
        raise FrameError(f"frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise FrameError(f"frame dtype is {frame.dtype}, expected uint8 (0-255 pixel values)")
    if frame.ndim != 3 or frame.shape[2] != 3:
        hint = " (greyscale? convert with cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))" if frame.ndim == 2 else ""
        hint = " (4 channels? drop alpha with cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR))" if frame.ndim == 3 and frame.shape[2] == 4 else hint
        raise FrameError(f"frame shape is {frame.shape}, expected HxWx3{hint}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise FrameError(f"frame is empty (shape {frame.shape})")
    return frame


def check_batch(batch: np.ndarray) -> np.ndarray:
    """Like `check_frame` for an NxHxWx3 uint8 array."""
    if batch.dtype != np.uint8:
        raise FrameError(f"batch dtype is {batch.dtype}, expected uint8 (0-255 pixel values)")
    if batch.ndim != 4 or batch.shape[3] != 3:
        raise FrameError(f"batch shape is {batch.shape}, expected NxHxWx3")
    if 0 in batch.shape:
        raise FrameError(f"batch is empty (shape {batch.shape})")
    return batch


def check_channel_order(order: str) -> str:
    up = str(order).upper()
    if up not in CHANNEL_ORDERS:
        raise FrameError(f"channel_order must be 'BGR' or 'RGB', got {order!r}")
    return up
