"""Where a frame loop's results go: JSONL events, an annotated video, a window.

Two layers. The writers (`JsonlSink`, `VideoSink`, `WindowSink`) know a format: whole JSON lines, a video
container, an OpenCV window; each is opened once and written per frame, and none parses or allocates more
than the event itself. The loop's sinks (`JsonlEvents`, `AnnotatedVideo`, `LiveWindow`, `Decisions`:
`runtime.pipeline.Sink`) know what of a frame goes there. The window needs a display and an OpenCV build with
GUI support (opencv-python, not -headless); when either is missing the loop runs headless and says so once.

A sink that cannot write (a full disk, /dev/full, a quota, a vanished NFS server) never stops the frame loop,
which may run for months: it counts what it could not write (`SinkHealth`), says so once per kind of error,
keeps trying at most once a second and says when it writes again. A JSONL file keeps only whole lines. The
video sink cannot learn from OpenCV that a write failed, so it watches the free space of its file system and
pauses (counting the frames it skips) while less than a reserve is free, before the muxer can fail half-way;
when it closes it opens the finished file again, so a video that could not be finished is reported, never left
silently unplayable. Both report what they lost in `health.summary()`, which the camera summary prints.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Mapping

import cv2
import numpy as np

from waste_edge._io import write_whole
from waste_edge._options import option
from waste_edge._outputs import check_output, output_file
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.decision_event import DecisionEvent, DecisionSink
from waste_edge.runtime.observations import FrameResult, FrameSkipped
from waste_edge.runtime.pipeline import Sink, StopPipeline

log = logging.getLogger(__name__)

# Codecs OpenCV's own FFmpeg / MJPEG writers can produce without extra libraries.
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
RETRY_S = 1.0  # a failing sink tries again at most this often (a full disk answers at once; no busy loop)
SPACE_CHECK_S = 0.25  # the video sink reads its file system's free space at most this often


class SinkError(WasteEdgeError):
    """An output that cannot be written (bad path, unsupported video container)."""


def _reason(e: OSError) -> str:
    return e.strerror or (errno.errorcode.get(e.errno or 0) if e.errno else "") or type(e).__name__


@dataclass
class SinkHealth:
    """What one sink could not write: counted per reason, said once per reason, and whether it is failing now."""

    name: str  # e.g. "events /var/log/x.jsonl"
    unit: str  # what it counts: "events", "frames"
    lost: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # reason -> items lost for it
    failing: bool = False
    recoveries: int = 0  # times it wrote again after failing
    problem: str = ""  # a lasting problem found at the end (a video that could not be finished)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def lose(self, reason: str, n: int = 1, detail: str = "") -> None:
        """Count `n` items lost for `reason` (a stable kind: it is said once); `detail` is added to what is said."""
        with self._lock:
            first = reason not in self.reasons
            self.reasons[reason] = self.reasons.get(reason, 0) + n
            self.lost += n
            started = not self.failing
            self.failing = True
        said = f"{reason}: {detail}" if detail else reason
        if first:
            log.warning("%s: cannot write (%s); %s are counted as lost until it can write again", self.name, said, self.unit)
        elif started:
            log.warning("%s: cannot write again (%s)", self.name, said)

    def wrote(self) -> None:
        if not self.failing:
            return
        with self._lock:
            self.failing = False
            self.recoveries += 1
            lost = self.lost
        log.warning("%s: writing again (%d %s lost so far)", self.name, lost, self.unit)

    def status(self) -> SinkStatus:
        """A frozen copy (what /api/v1/status and the summaries read)."""
        with self._lock:
            return SinkStatus(self.name, self.unit, self.lost, tuple(self.reasons.items()), self.failing, self.recoveries, self.problem)

    def summary(self) -> str | None:
        return self.status().summary()


@dataclass(frozen=True)
class SinkStatus:
    """One sink's losses at one moment (the `sinks` part of /api/v1/status; the `lost:` lines of the summaries)."""

    name: str
    unit: str
    lost: int
    reasons: tuple[tuple[str, int], ...]  # (reason, items lost for it)
    failing: bool
    recoveries: int
    problem: str

    def summary(self) -> str | None:
        """One line when something was lost or is broken, else None."""
        parts = []
        if self.lost:
            why = ", ".join(f"{r} x{n}" for r, n in self.reasons)
            parts.append(f"{self.lost} {self.unit} lost ({why})")
        if self.problem:
            parts.append(self.problem)
        return f"{self.name}: " + "; ".join(parts) if parts else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "lost": self.lost, "reasons": dict(self.reasons), "failing": self.failing,
                "recoveries": self.recoveries, "problem": self.problem}


class JsonlSink:
    """One JSON object per line to a file or to stdout ('-'), flushed per event so a tail -f sees it live.

    A file that cannot be written loses the events, counted in `health`, never the loop; stdout that fails
    (a closed pipe, a full device) ends the run as any verb's stdout does."""

    def __init__(self, target: str | Path) -> None:
        self.to_stdout = str(target) == "-"
        if self.to_stdout:
            self._fh: IO[str] = sys.stdout
        else:
            path = Path(target)
            check_output(path, option="--jsonl")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._file: IO[bytes] = open(path, "wb", buffering=0)  # unbuffered: a failed line is never flushed later
            except OSError as e:
                raise SinkError(f"{path}: cannot write JSONL: {e.strerror or e}") from None
        self.name = "stdout" if self.to_stdout else str(target)
        self.lines = 0
        self.health = SinkHealth(f"events {self.name}", "events")
        self._good = 0  # bytes of whole lines in the file
        self._retry_at = 0.0
        self._last_reason = ""
        self._dumps = json.JSONEncoder(separators=(",", ":")).encode

    def write(self, event: Mapping[str, Any]) -> bool:
        """Write one event; False when it was lost (counted in `health`)."""
        line = self._dumps(event) + "\n"
        if self.to_stdout:
            self._fh.write(line)
            self._fh.flush()
            self.lines += 1
            return True
        if self.health.failing and time.monotonic() < self._retry_at:
            self.health.lose(self._last_reason)
            return False
        try:
            self._good = write_whole(self._file, line.encode("utf-8", "backslashreplace"), self._good)  # whole lines only
        except OSError as e:  # disk full, quota, I/O error, a FIFO's reader gone: count it, keep the loop, retry in a second
            self._retry_at = time.monotonic() + RETRY_S
            self._last_reason = _reason(e)
            self.health.lose(self._last_reason)
            return False
        self.health.wrote()
        self.lines += 1
        return True

    def close(self) -> None:
        if not self.to_stdout:
            try:
                self._file.close()
            except OSError as e:
                self.health.problem = f"closing failed ({_reason(e)})"


class VideoSink:
    """Annotated frames to a video file; opened on the first frame (its size), later frames resized to it.

    OpenCV's writers do not report a failed write, so the sink keeps a reserve of free space on the file
    system (`reserve_bytes`): below it, frames are skipped and counted, and writing resumes when space
    returns. `close` checks that the finished file opens and holds frames (`health.problem` otherwise)."""

    def __init__(self, path: str | Path, fps: float = 30.0, *, reserve_bytes: int = 4 * 1024 * 1024) -> None:
        self.path = Path(path)
        check_output(self.path, option="--save")
        suffix = self.path.suffix.lower()
        if suffix not in VIDEO_CODECS:
            raise SinkError(f"{self.path}: cannot save video as {suffix or 'no suffix'!r}; use one of {', '.join(sorted(VIDEO_CODECS))}")
        self.fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[suffix])
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self.reserve_bytes = int(reserve_bytes)
        self._writer: Any = None
        self._size: tuple[int, int] | None = None
        self._bgr: np.ndarray | None = None
        self.frames = 0
        self.health = SinkHealth(f"video {self.path}", "frames")
        self._space_checked = -float("inf")
        self._room = True
        self._why = ""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"{self.path}: cannot create folder: {e.strerror or e}") from None

    def _free_bytes(self) -> int | None:
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def _needed(self) -> int:
        """Free bytes to keep: the reserve, a few frames as written so far, and the index the muxer writes at the end."""
        try:
            size = self.path.stat().st_size if self._writer is not None else 0
        except OSError:
            size = 0
        per_frame = size // self.frames if self.frames else 0
        return self.reserve_bytes + 4 * per_frame + 32 * self.frames

    def _has_room(self) -> bool:
        now = time.monotonic()
        if now - self._space_checked >= SPACE_CHECK_S:
            self._space_checked = now
            free = self._free_bytes()
            needed = self._needed() + (0 if self._room else self.reserve_bytes)  # resume with a margin, not at the edge
            self._room = free is None or free >= needed
            if not self._room and free is not None:
                self._why = f"{free // 1024} KiB free, {needed // 1024} KiB kept in reserve"
        return self._room

    def write(self, frame: np.ndarray, channel_order: str = "BGR") -> bool:
        """Add one frame; False when it was skipped for lack of space (counted in `health`)."""
        if not self._has_room():
            self.health.lose("disk nearly full", detail=self._why)
            return False
        if self._writer is None:
            self._size = (frame.shape[1], frame.shape[0])
            self._writer = cv2.VideoWriter(str(self.path), self.fourcc, self.fps, self._size)
            if not self._writer.isOpened():
                raise SinkError(f"{self.path}: OpenCV cannot open a video writer for this file")
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        if channel_order != "BGR":
            if self._bgr is None or self._bgr.shape != frame.shape:
                self._bgr = np.empty_like(frame)
            frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR, dst=self._bgr)
        self._writer.write(frame)
        self.health.wrote()
        self.frames += 1
        return True

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        self._verify()

    def _verify(self) -> None:
        """The finished file must open and hold frames: a muxer that hit a full disk leaves one that does not."""
        cap = cv2.VideoCapture(str(self.path))
        try:
            ok = cap.isOpened() and cap.read()[0]
        finally:
            cap.release()
        if not ok:
            free = self._free_bytes()
            space = f"; {free // 1024} KiB free on its disk" if free is not None else ""
            self.health.problem = f"could not be finished: the file does not play ({self.frames} frames were written{space})"
            log.warning("video %s %s", self.path, self.health.problem)


def display_available() -> bool:
    """A display to open a window on: X11 / Wayland on Linux; macOS and Windows always have one."""
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class WindowSink:
    """An OpenCV window; `show` returns False when the user presses q / Esc or closes the window."""

    def __init__(self, title: str = "waste-edge") -> None:
        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as e:
            raise SinkError("this OpenCV build has no GUI support (opencv-python-headless?): " + str(e).strip().splitlines()[-1][:120]) from None
        self._opened = True

    def show(self, frame: np.ndarray, channel_order: str = "BGR") -> bool:
        if channel_order != "BGR":
            frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        cv2.imshow(self.title, frame)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        try:
            return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1
        except cv2.error:
            return True

    def close(self) -> None:
        if self._opened:
            try:
                cv2.destroyWindow(self.title)
            except cv2.error:
                pass
            self._opened = False


def open_window(title: str = "waste-edge") -> WindowSink | None:
    """A window if one can be shown here, else None (logged once): the loop then runs headless."""
    if not display_available():
        log.warning("no display (DISPLAY / WAYLAND_DISPLAY unset): running headless")
        return None
    try:
        return WindowSink(title)
    except SinkError as e:
        log.warning("%s: running headless", e)
        return None


# -- the frame loop's sinks (runtime.pipeline.Sink) over the writers above ------------------------------------


@dataclass(frozen=True)
class OutputOptions:
    """Where a frame loop's results go (the output option group of `camera`; `serve` takes --jsonl)."""

    show: bool = option(True, "--no-show", dest="show", action="store_false",
                        help="no window (also automatic without a display or GUI-enabled OpenCV)")
    save: Path | None = option(None, "--save", type=output_file, metavar="VIDEO", help="write the annotated frames to a video (.mp4 or .avi)")
    jsonl: Path | None = option(None, "--jsonl", type=output_file, metavar="PATH|-", help="write one JSON event per frame to PATH, or to stdout with -")


class JsonlEvents(Sink):
    """One JSON line per classified or skipped frame (`FrameResult.event`), to a `JsonlSink`.

    Several cameras may share one writer (the service's --jsonl): give them the same `lock`, `with_camera=True`
    (each event names its camera) and `owns=False` (the owner closes the writer after its final records)."""

    name = "jsonl"

    def __init__(self, writer: JsonlSink, *, with_camera: bool = False, lock: threading.Lock | None = None, owns: bool = True) -> None:
        self.writer = writer
        self.with_camera = with_camera
        self.lock = lock or threading.Lock()
        self.owns = owns

    def _write(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.writer.write(event)

    def on_frame(self, result: FrameResult) -> None:
        self._write(result.event(with_camera=self.with_camera))

    def on_skip(self, skipped: FrameSkipped) -> None:
        self._write(skipped.event(with_camera=self.with_camera))

    def close(self) -> None:
        if self.owns:
            self.writer.close()


class AnnotatedVideo(Sink):
    """The annotated frames to a `VideoSink` (playable after a stop: the container is finalised on close)."""

    name = "video"
    reads_pixels = True

    def __init__(self, writer: VideoSink) -> None:
        self.writer = writer

    def on_frame(self, result: FrameResult) -> None:
        self.writer.write(result.image.annotated(), result.image.channel_order)

    def close(self) -> None:
        self.writer.close()


class LiveWindow(Sink):
    """The annotated frames in a `WindowSink`; q, Esc or closing the window ends the loop."""

    name = "window"
    reads_pixels = True

    def __init__(self, window: WindowSink) -> None:
        self.window = window

    def on_frame(self, result: FrameResult) -> None:
        if not self.window.show(result.image.annotated(), result.image.channel_order):
            raise StopPipeline("window closed")

    def close(self) -> None:
        self.window.close()


class Decisions(Sink):
    """Hands every decision change to a `runtime.decision_event.DecisionSink` (`target.on_decision(event)`): how a
    self-contained decision consumer (the --on-decision hook, webhooks, the service's actions) joins a frame loop.

    `owns`: close the target with the loop (else its owner closes it, e.g. once for all of a service's cameras)."""

    def __init__(self, target: DecisionSink, *, owns: bool = True, close_timeout: float = 10.0, name: str | None = None) -> None:
        self.target = target
        self.owns = owns
        self.close_timeout = close_timeout
        self.name = name or type(target).__name__

    def on_decision(self, event: DecisionEvent) -> None:
        self.target.on_decision(event)

    def close(self) -> None:
        if self.owns:
            self.target.close(self.close_timeout)
