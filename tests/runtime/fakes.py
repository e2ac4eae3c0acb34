"""Fake captures that behave like a misbehaving camera: frames, empty reads, freezes, failed opens.

They follow `cv2.VideoCapture`'s contract closely enough for the runtime: `read(image)` decodes into the
given array when its shape fits (as OpenCV does) and returns it, `isOpened()`, `release()`, `get()`.
"""

from __future__ import annotations

import threading
import time
from typing import Iterable

import numpy as np

from tests.helpers import synthetic_rgb


def bgr_frame(label: str = "B", seed: int = 0, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    return np.ascontiguousarray(synthetic_rgb(label, seed, size)[..., ::-1])


class FakeCapture:
    """Plays a script of actions, one per read: 'frame', 'none' (empty read), 'freeze' (block), 'bad' (2-D frame).

    After the script it keeps returning frames. Frame k has every pixel of its first row set to k % 256 in
    channel 0 (the rest is a BGR picture of `label`), so tests can tell which frame they got.
    """

    def __init__(self, script: Iterable[str] = (), *, label: str = "B", opened: bool = True, unfreeze: threading.Event | None = None, delay: float = 0.0, size: tuple[int, int] = (64, 48)) -> None:
        self.script = list(script)
        self.base = bgr_frame(label, 0, size)
        self.opened = opened
        self.unfreeze = unfreeze or threading.Event()
        self.delay = delay
        self.reads = 0
        self.frames = 0
        self.released = False

    def read(self, image: np.ndarray | None = None):
        i = self.reads
        self.reads += 1
        if self.delay:
            time.sleep(self.delay)
        action = self.script[i] if i < len(self.script) else "frame"
        if action == "none":
            return False, None
        if action == "freeze":
            self.unfreeze.wait(10.0)  # a stuck V4L2 read: returns only when the test lets it
            return False, None
        if action == "bad":
            return True, np.zeros(self.base.shape[:2], dtype=np.uint8)
        k = self.frames
        self.frames += 1
        out = image if image is not None and image.shape == self.base.shape and image.dtype == np.uint8 else np.empty_like(self.base)
        out[...] = self.base
        out[0, :, 0] = k % 256
        return True, out

    def isOpened(self) -> bool:
        return self.opened and not self.released

    def release(self) -> None:
        self.released = True

    def get(self, prop: int) -> float:
        return 30.0 if prop == 5 else 0.0  # cv2.CAP_PROP_FPS == 5


class ScriptedCamera:
    """A capture factory: hands out the given captures in order, then healthy ones when they run out."""

    def __init__(self, captures: list[FakeCapture]) -> None:
        self.captures = captures
        self.opened: list[FakeCapture] = []

    def __call__(self) -> FakeCapture:
        i = len(self.opened)
        cap = self.captures[i] if i < len(self.captures) else FakeCapture()
        self.opened.append(cap)
        return cap
