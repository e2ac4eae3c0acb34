"""Camera-loop overhead: frames/s of `waste-edge camera` on a video, headless, against pure inference.

The loop is the library function the `camera` verb calls (`runtime.camera.run_camera` over
`runtime.sources.open_source`), not a subprocess, so what is timed is the loop itself: the reader thread
decoding the video, the hand-over of each frame, smoothing and bookkeeping. Pure inference is
`Classifier.predict_proba` on decoded frames of the same video, one at a time, already in memory. Rounds alternate
loop and pure inference (A B, B A, ...) and the median of the per-round ratios is reported, because on a
shared machine the two halves of one round see the same background load.

Where the loop's time goes is measured in the same rounds by two more runs: the same loop over a source
that hands out already-decoded frames through the same reader thread (`memory_loop_fps`: the loop's own
bookkeeping, no decoding), and the video decoded alone, as fast as OpenCV can (`decode_fps`). With 1/fps as
the cost of a frame: loop - memory loop = what decoding on the same cores costs the loop, memory loop - pure
= the loop's own work.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from waste_edge.errors import WasteEdgeError

_CODECS = ((".mp4", "mp4v"), (".avi", "MJPG"))
_RING = 4


@dataclass
class CameraOverhead:
    model: str
    variant: str
    backend: str
    status: str = "ok"
    error: str | None = None
    frames: int = 0  # frames per round
    rounds: int = 0
    frame_size: str = ""
    codec: str = ""
    loop_fps: float | None = None  # median round
    pure_fps: float | None = None  # median round
    overhead: float | None = None  # median of per-round (pure_fps / loop_fps - 1): 0.05 = the loop costs 5 % more per frame
    memory_loop_fps: float | None = None  # the loop over pre-decoded frames (no decoding), median round
    decode_fps: float | None = None  # the video decoded alone, median round
    loop_latency_ms: dict[str, float] = field(default_factory=dict)  # the loop's own total-latency percentiles, median round
    rounds_detail: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_video(path: Path, frames: np.ndarray, fps: float = 30.0) -> tuple[Path, str]:
    """Write BGR frames to a video, trying mp4v/.mp4 then MJPG/.avi; returns (path written, codec)."""
    h, w = frames.shape[1:3]
    for suffix, fourcc in _CODECS:
        out = path.with_suffix(suffix)
        writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
        if not writer.isOpened():
            writer.release()
            continue
        for f in frames:
            writer.write(f)
        writer.release()
        cap = cv2.VideoCapture(str(out))
        ok, _ = cap.read()
        cap.release()
        if ok:
            return out, fourcc
    raise WasteEdgeError("this OpenCV build can write neither mp4v nor MJPG video: the camera-loop test needs one")


def decode_video(path: Path, keep: int = _RING) -> tuple[list[np.ndarray], int]:
    """The first `keep` decoded frames and the number of frames the video really has."""
    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    count = 0
    while True:
        ok, f = cap.read()
        if not ok:
            break
        if count < keep:
            frames.append(f)
        count += 1
    cap.release()
    return frames, count


class _Replay:
    """A capture that replays a few decoded frames `n` times: the camera loop without decoding."""

    def __init__(self, frames: list[np.ndarray], n: int) -> None:
        self.frames, self.n, self.i = frames, n, 0

    def read(self, image: Any = None) -> tuple[bool, np.ndarray | None]:
        if self.i >= self.n:
            return False, None
        frame = self.frames[self.i % len(self.frames)]
        self.i += 1
        if image is not None and image.shape == frame.shape:
            np.copyto(image, frame)  # what a decoder writing into the reused buffer costs at least
            return True, image
        return True, frame.copy()

    def isOpened(self) -> bool:
        return True

    def release(self) -> None:
        pass

    def get(self, prop: int) -> float:
        return float(self.n) if prop == cv2.CAP_PROP_FRAME_COUNT else 0.0


def decode_fps(path: Path) -> tuple[float, int]:
    """Frames per second of decoding the video alone (into one reused buffer, as the reader does), and the count."""
    cap = cv2.VideoCapture(str(path))
    buf = None
    count = 0
    t0 = time.perf_counter()
    while True:
        ok, frame = cap.read(buf)
        if not ok:
            break
        buf = frame
        count += 1
    elapsed = time.perf_counter() - t0
    cap.release()
    return (count / elapsed if elapsed > 0 else 0.0), count


def measure_camera_overhead(
    classifier: Any,
    frames: np.ndarray,
    *,
    rounds: int = 3,
    model: str = "",
    workdir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> CameraOverhead:
    """Loop vs pure inference for a loaded `Classifier` on a video made of `frames` (BGR, N x H x W x 3)."""
    from waste_edge.runtime.camera import CameraConfig, run_camera
    from waste_edge.runtime.sinks import OutputOptions
    from waste_edge.runtime.sources import open_source

    h, w = frames.shape[1:3]
    result = CameraOverhead(model=model, variant=classifier.metadata.variant, backend=classifier.backend,
                            frames=len(frames), rounds=rounds, frame_size=f"{w}x{h}")
    with tempfile.TemporaryDirectory(prefix="waste-edge-bench-", dir=workdir) as tmp:
        video, result.codec = write_video(Path(tmp) / "loop", frames)
        # Pure inference reads a ring of a few decoded frames, as the loop does (its reader decodes into a small
        # pool of reused buffers): 300 distinct 1 MB frames would be cache-cold and make pure inference look slower.
        ring, n = decode_video(video)
        if not n:
            raise WasteEdgeError(f"{video}: OpenCV wrote the video but cannot read it back")
        result.frames = n
        classifier.predict_proba(ring[0])  # warm the session and its buffers outside the timed part
        config = CameraConfig(output=OutputOptions(show=False))
        ratios, loops, pures, lats, memory, decode = [], [], [], [], [], []

        def loop_round() -> Any:
            with open_source(str(video)) as source:
                return run_camera(classifier, source, config)

        def memory_round() -> float:
            with open_source("replay", live=False, capture_factory=lambda: _Replay(ring, n)) as source:
                summary = run_camera(classifier, source, config)
            return summary.frames / summary.elapsed_s if summary.elapsed_s > 0 else 0.0

        def pure_round() -> float:
            t0 = time.perf_counter()
            for i in range(n):
                classifier.predict_proba(ring[i % len(ring)])
            return n / (time.perf_counter() - t0)

        for r in range(rounds):
            # A B, B A, ...: a drift in background load does not favour whichever half runs first.
            if r % 2 == 0:
                summary = loop_round()
                pure_fps = pure_round()
            else:
                pure_fps = pure_round()
                summary = loop_round()
            if summary.frames != n or summary.elapsed_s <= 0:
                raise WasteEdgeError(f"camera loop classified {summary.frames} of {n} frames (stopped: {summary.stop_reason})")
            loop_fps = summary.frames / summary.elapsed_s
            memory.append(memory_round())
            decode.append(decode_fps(video)[0])
            ratios.append(pure_fps / loop_fps - 1.0)
            loops.append(loop_fps)
            pures.append(pure_fps)
            lats.append(summary.latency_ms.get("total", {}))
            result.rounds_detail.append({"loop_fps": round(loop_fps, 2), "pure_fps": round(pure_fps, 2), "overhead": round(ratios[-1], 4),
                                         "memory_loop_fps": round(memory[-1], 2), "decode_fps": round(decode[-1], 2)})
            if log:
                log(f"camera loop {model} round {r + 1}/{rounds}: loop {loop_fps:.1f} FPS, pure {pure_fps:.1f} FPS")
        result.overhead = float(statistics.median(ratios))
        result.loop_fps = float(statistics.median(loops))
        result.pure_fps = float(statistics.median(pures))
        result.memory_loop_fps = float(statistics.median(memory))
        result.decode_fps = float(statistics.median(decode))
        mid = sorted(range(rounds), key=lambda i: loops[i])[rounds // 2]
        result.loop_latency_ms = {k: round(v, 3) for k, v in lats[mid].items()}
    return result
