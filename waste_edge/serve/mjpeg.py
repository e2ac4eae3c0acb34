"""The annotated MJPEG stream of a camera: the newest JPEG (`StreamFrame`) and the sink that encodes it.

`MjpegStream` encodes only while someone watches (`/stream/CAMERA.mjpg` counts its viewers) and at most
`fps` times a second: JPEG encoding costs a few ms per 640x480 frame, which a camera nobody looks at must
not pay. The route (`routes/streams.py`) polls `StreamFrame.get()` and sends each new JPEG once.
"""

from __future__ import annotations

import threading
import time

import cv2

from waste_edge.runtime.observations import FrameResult
from waste_edge.runtime.pipeline import Sink


class StreamFrame:
    """The newest annotated JPEG of a camera; `seq` grows with every new one (readers poll it)."""

    def __init__(self, fps: float = 10.0) -> None:
        self.fps = float(fps)
        self.seq = 0
        self.jpeg: bytes | None = None
        self.viewers = 0
        self.lock = threading.Lock()

    def put(self, jpeg: bytes) -> None:
        with self.lock:
            self.jpeg = jpeg
            self.seq += 1

    def get(self) -> tuple[int, bytes | None]:
        with self.lock:
            return self.seq, self.jpeg

    def watch(self, delta: int) -> None:
        with self.lock:
            self.viewers += delta


class MjpegStream(Sink):
    """Encodes a camera's annotated frames into its `StreamFrame`, only while watched, at most `stream.fps` a second."""

    name = "stream"
    reads_pixels = True

    def __init__(self, stream: StreamFrame, jpeg_quality: int = 80) -> None:
        self.stream = stream
        self.quality = int(jpeg_quality)
        self._last = 0.0

    def on_frame(self, result: FrameResult) -> None:
        now = time.perf_counter()
        if not self.stream.viewers or (now - self._last) * self.stream.fps < 1.0:
            return
        self._last = now
        image = result.image.annotated()
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if result.image.channel_order == "RGB" else image
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if ok:
            self.stream.put(buf.tobytes())
