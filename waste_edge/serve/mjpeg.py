"""The annotated JPEGs of a camera: the newest one (`StreamFrame`) and the sink that encodes it.

`MjpegStream` encodes only while the JPEGs are `wanted` (someone watches `/stream/CAMERA.mjpg`, or asked for
`latest.jpg` within the last SNAPSHOT_DEMAND_S seconds) and at most `fps` times a second: JPEG encoding costs
a few ms per 640x480 frame, which a camera nobody looks at must not pay. The routes (`routes/streams.py`,
`routes/snapshots.py`) poll `StreamFrame` and send each new JPEG once.
"""

from __future__ import annotations

import threading
import time

import cv2

from waste_edge.runtime.observations import FrameResult
from waste_edge.runtime.pipeline import Sink


SNAPSHOT_DEMAND_S = 30.0


class StreamFrame:
    """The newest annotated JPEG of a camera; `seq` grows with every new one (readers poll it).

    JPEGs cost CPU, so a camera encodes them only while `wanted`: someone watches the MJPEG stream, or
    asked for a snapshot (`latest.jpg`) within the last SNAPSHOT_DEMAND_S seconds (Home Assistant's
    camera card polls it every 10 s, so a watched card keeps it fresh and a closed one costs nothing)."""

    def __init__(self, fps: float = 10.0) -> None:
        self.fps = float(fps)
        self.seq = 0
        self.jpeg: bytes | None = None
        self.ts = 0.0  # wall-clock time of the frame in `jpeg`
        self.viewers = 0
        self.demand_until = 0.0  # time.monotonic() until which snapshots were asked for
        self.lock = threading.Lock()

    def put(self, jpeg: bytes, ts: float) -> None:
        with self.lock:
            self.jpeg = jpeg
            self.ts = ts
            self.seq += 1

    def get(self) -> tuple[int, bytes | None]:
        with self.lock:
            return self.seq, self.jpeg

    def snapshot(self) -> tuple[int, bytes | None, float]:
        with self.lock:
            return self.seq, self.jpeg, self.ts

    def watch(self, delta: int) -> None:
        with self.lock:
            self.viewers += delta

    def demand(self, seconds: float = 0.0) -> None:
        with self.lock:
            self.demand_until = max(self.demand_until, time.monotonic() + (seconds or SNAPSHOT_DEMAND_S))

    @property
    def wanted(self) -> bool:  # read without the lock: a stale answer costs one frame at most
        return self.viewers > 0 or (self.demand_until > 0.0 and time.monotonic() < self.demand_until)


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
        if not self.stream.wanted or (now - self._last) * self.stream.fps < 1.0:
            return
        self._last = now
        image = result.image.annotated()
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if result.image.channel_order == "RGB" else image
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if ok:
            self.stream.put(buf.tobytes(), result.info.ts)
