"""The on-frame overlay: label, confidence, FPS and latency, drawn in place.

Drawing costs about 0.1 ms per 640x480 frame, which is a visible share of a 3 ms model, so the camera
loop calls this only when a window is shown or a video is saved. Text is drawn into the frame itself (no
copy); colours are given in BGR and swapped for RGB frames so a class keeps its colour whatever the source.
"""

from __future__ import annotations

import cv2
import numpy as np

# BGR colours per class index; the "uncertain" state is grey.
PALETTE_BGR = ((60, 170, 40), (200, 120, 20), (40, 40, 220), (0, 180, 230), (180, 60, 180))
UNCERTAIN_BGR = (128, 128, 128)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_colour(index: int | None) -> tuple[int, int, int]:
    return UNCERTAIN_BGR if index is None else PALETTE_BGR[index % len(PALETTE_BGR)]


def draw_overlay(
    frame: np.ndarray,
    *,
    label: str,
    confidence: float,
    fps: float,
    latency_ms: float,
    colour_bgr: tuple[int, int, int] = UNCERTAIN_BGR,
    channel_order: str = "BGR",
) -> np.ndarray:
    """Draw a banner with `label confidence` and `fps | latency` on `frame` (in place); returns the frame."""
    if not frame.flags.writeable:
        frame = frame.copy()
    h, w = frame.shape[:2]
    scale = max(0.4, min(w, h) / 480.0 * 0.8)
    thick = max(1, int(round(scale * 2)))
    colour = colour_bgr if channel_order == "BGR" else colour_bgr[::-1]
    line1 = f"{label} {confidence * 100:.0f}%"
    line2 = f"{fps:.0f} FPS | {latency_ms:.1f} ms"
    (w1, h1), base1 = cv2.getTextSize(line1, _FONT, scale, thick)
    (w2, h2), base2 = cv2.getTextSize(line2, _FONT, scale * 0.6, max(1, thick - 1))
    pad = int(8 * scale)
    box_h = h1 + h2 + base1 + 3 * pad
    cv2.rectangle(frame, (0, 0), (min(w - 1, max(w1, w2) + 2 * pad), min(h - 1, box_h)), colour, thickness=-1)
    cv2.putText(frame, line1, (pad, pad + h1), _FONT, scale, (255, 255, 255), thick, cv2.LINE_AA)
    cv2.putText(frame, line2, (pad, 2 * pad + h1 + base1 + h2), _FONT, scale * 0.6, (255, 255, 255), max(1, thick - 1), cv2.LINE_AA)
    return frame
