"""Frame sources: camera index, video file, RTSP/HTTP URL, GStreamer pipeline, image folder or glob, and the
Raspberry Pi camera module (`picamera2`, through the Picamera2 library, imported only when asked for).

Every source is read by a background thread so decoding overlaps inference. The two kinds differ in what
they do when the consumer is slower than the producer:

* live sources (cameras, streams) keep only the newest frame and count the ones they drop. A camera
  does not wait for you; V4L2 and RTSP buffer several frames, and reading those in order would show the
  past (hundreds of ms of lag) instead of what is in front of the camera now.
* files (videos, images) are read without dropping: a bounded queue makes the reader wait.

Live sources also survive the failures real cameras have: a read that returns nothing (counted; after a
few in a row the device is reopened), a read that blocks forever (a stalled or unplugged camera: the
consumer notices that no frame arrived within `stall_timeout`, abandons the blocked reader and opens a new
capture), and an open that fails (retried with exponential backoff, logged, forever). The capture is made
by an injectable factory so tests can simulate all of this without a camera.

Frames handed out by `read()` live in a small pool of reused buffers (OpenCV's `read(image)` decodes into
them, so there is no 1 MB allocation per 640x480 frame): a frame is valid until the next `read()`; copy it
to keep it, or pass `reuse_buffers=False`.
"""

from __future__ import annotations

import glob as globlib
import logging
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from waste_edge._io import IMAGE_SUFFIXES, VIDEO_SUFFIXES, is_image_path, list_files, special_kind
from waste_edge._options import float_in, option
from waste_edge._outputs import input_spec
from waste_edge.data.decode import DecodeError, load_rgb_array
from waste_edge.errors import WasteEdgeError

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
GLOB_CHARS = frozenset("*?[")


DEVICE_FORMS = ("--device forms: 0 (camera index), /dev/video0, rtsp://user:pass@host/stream, http://host/mjpg, "
                "a GStreamer pipeline ending in appsink, video.mp4, a folder of images, 'shots/**/*.jpg', "
                "picamera2[:N][:WxH] (Raspberry Pi camera module; deploy/raspberry-pi.md).")


@dataclass(frozen=True)
class SourceOptions:
    """Where frames come from and how a source is kept alive (the source option group of `camera` and `serve`)."""

    device: str = option("0", "--device", type=input_spec,
                         help="camera index, URL, GStreamer pipeline, video, image folder, glob or picamera2 (default: %(default)s)")
    stall_timeout: float = option(5.0, "--stall-timeout", type=float_in(0.0, 3600.0, open_lo=True), metavar="S",
                                  help="seconds without a frame before a live source is reopened (default: %(default)s)")
    loop: bool = option(False, "--loop", action="store_true", help="replay video files and image folders from the start when they end")
    realtime: bool = option(False, "--realtime", action="store_true", help="read video files at their own frame rate, as a camera delivers them")


class SourceError(WasteEdgeError):
    """A source that cannot be opened at all (no such camera, file or folder; unsupported pipeline)."""


class Capture(Protocol):
    """The part of `cv2.VideoCapture` a source uses; fakes in tests implement the same four methods."""

    def read(self, image: Any = None) -> tuple[bool, np.ndarray | None]: ...

    def isOpened(self) -> bool: ...

    def release(self) -> None: ...

    def get(self, prop: int) -> float: ...


CaptureFactory = Callable[[], Capture]


@dataclass(frozen=True)
class FrameInfo:
    index: int  # position in the source's own sequence; frames a live reader dropped leave gaps
    ts: float  # wall-clock time (time.time()) when the reader got the frame
    dropped: int = 0  # frames dropped by a live reader since the previous frame handed out
    path: str | None = None  # the image file the frame came from (folder / glob sources)


@dataclass(frozen=True)
class SourceStats:
    frames: int  # frames handed to the consumer
    dropped: int  # frames a live reader replaced by a newer one before the consumer took them
    read_failures: int  # reads that returned no frame (counted before a reopen)
    stalls: int  # reads that blocked longer than stall_timeout (camera frozen or unplugged)
    reconnects: int  # successful reopens after a failure or stall
    skipped_files: int  # image files of a folder / glob source that could not be decoded


class FrameSource(ABC):
    """Iterator of (frame, FrameInfo); `close()` (or a `with` block) stops its reader."""

    name: str
    kind: str  # camera | url | gstreamer | video | images | picamera2 | custom
    live: bool
    channel_order: str  # order of the frames it yields: BGR from OpenCV, RGB from image files
    fps: float | None
    frame_count: int | None

    @abstractmethod
    def read(self) -> tuple[np.ndarray, FrameInfo] | None:
        """The next frame, or None at the end of a file source (or after `close`)."""

    @abstractmethod
    def stats(self) -> SourceStats: ...

    @abstractmethod
    def close(self) -> None: ...

    def __iter__(self) -> Iterator[tuple[np.ndarray, FrameInfo]]:
        while True:
            item = self.read()
            if item is None:
                return
            yield item

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _ImageFiles:
    """A capture over a list of image files: EXIF-aware RGB decoding, undecodable files skipped and counted."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self.pos = 0
        self.skipped = 0
        self.last_path: str | None = None

    def read(self, image: Any = None) -> tuple[bool, np.ndarray | None]:
        while self.pos < len(self.paths):
            path = self.paths[self.pos]
            self.pos += 1
            try:
                arr = load_rgb_array(path)
            except DecodeError as e:
                self.skipped += 1
                log.warning("%s: skipped (%s)", path, e)
                continue
            self.last_path = str(path)
            return True, arr
        return False, None

    def isOpened(self) -> bool:
        return True

    def release(self) -> None:
        pass

    def get(self, prop: int) -> float:
        return float(len(self.paths)) if prop == cv2.CAP_PROP_FRAME_COUNT else 0.0


class ThreadedSource(FrameSource):
    """A capture read by a daemon thread; live: newest frame only + stall/reconnect handling; file: no drops."""

    def __init__(
        self,
        name: str,
        factory: CaptureFactory,
        *,
        kind: str = "custom",
        live: bool = True,
        channel_order: str = "BGR",
        queue_size: int = 4,
        stall_timeout: float = 5.0,
        max_failed_reads: int = 3,
        backoff: tuple[float, float] = (0.5, 10.0),
        reuse_buffers: bool = True,
    ) -> None:
        self.name = name
        self.kind = kind
        self.live = live
        self.channel_order = channel_order
        self.stall_timeout = float(stall_timeout)
        self.max_failed_reads = max(1, int(max_failed_reads))
        self.backoff = (float(backoff[0]), float(backoff[1]))
        self.reuse_buffers = reuse_buffers
        self._factory = factory
        self._capacity = 1 if live else max(1, int(queue_size))
        self._cond = threading.Condition()
        self._queue: deque[tuple[int, int, float, str | None]] = deque()  # (buffer, seq, ts, path)
        self._bufs: list[np.ndarray | None] = [None] * (self._capacity + 2)
        self._busy: set[int] = set()  # buffers a reader is decoding into right now (a frozen one keeps its own)
        self._held: int | None = None  # buffer of the frame the consumer holds
        self._gen = 0  # reader generation: a reader abandoned after a stall sees a newer one and exits
        self._read_since: float | None = None  # monotonic start of the current reader's pending read
        self._closed = False
        self._ended = False
        self._closed_event = threading.Event()
        self._seq = 0
        self._dropped_pending = 0
        self._frames = self._dropped = self._failures = self._stalls = self._reconnects = 0
        self._poll = max(0.005, min(0.1, self.stall_timeout / 4))

        cap = self._open_first()
        self.fps = _positive(cap.get(cv2.CAP_PROP_FPS))
        self.frame_count = None if live else _positive_int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self._skipped_source = cap if isinstance(cap, _ImageFiles) else None
        self._thread = self._start_reader(cap)

    # -- reader side -----------------------------------------------------------------------------------------

    def _open_first(self) -> Capture:
        try:
            cap = self._factory()
        except SourceError:
            raise
        except Exception as e:
            raise SourceError(f"cannot open {self.name}: {e}") from None
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise SourceError(f"cannot open {self.name}{_open_hint(self.kind)}")
        return cap

    def _start_reader(self, cap: Capture | None) -> threading.Thread:
        t = threading.Thread(target=self._reader, args=(self._gen, cap), name=f"waste-edge reader {self.name}", daemon=True)
        t.start()
        return t

    def _current(self, gen: int) -> bool:
        return not self._closed and gen == self._gen

    def _free_buffer(self) -> int:
        taken = {q[0] for q in self._queue} | self._busy
        if self._held is not None:
            taken.add(self._held)
        for i in range(len(self._bufs)):
            if i not in taken:
                return i
        self._bufs.append(None)  # only when an abandoned reader still holds one
        return len(self._bufs) - 1

    def _reopen(self, gen: int) -> Capture | None:
        delay = self.backoff[0]
        attempt = 0
        while self._current(gen):
            self._closed_event.wait(delay)
            if not self._current(gen):
                return None
            attempt += 1
            cap: Capture | None = None
            try:
                cap = self._factory()
            except Exception as e:
                log.warning("%s: reopen attempt %d failed: %s", self.name, attempt, e)
            if cap is not None and cap.isOpened():
                with self._cond:
                    if not self._current(gen):
                        cap.release()
                        return None
                    self._reconnects += 1
                log.warning("%s: reconnected (attempt %d)", self.name, attempt)
                return cap
            if cap is not None:
                cap.release()
            delay = min(delay * 2, self.backoff[1])
            log.warning("%s: cannot reopen (attempt %d); retrying in %.2f s", self.name, attempt, delay)
        return None

    def _reader(self, gen: int, cap: Capture | None) -> None:
        try:
            while self._current(gen):
                if cap is None:
                    cap = self._reopen(gen)
                    if cap is None:
                        return
                self._read_loop(gen, cap)
                if cap is not None:
                    cap.release()
                    cap = None
                if not self.live:
                    return
        except Exception:  # a reader must never die silently: log, let the consumer see the end / a stall
            log.exception("%s: reader failed", self.name)
            with self._cond:
                if not self.live and gen == self._gen:
                    self._ended = True
                self._cond.notify_all()
        finally:
            if cap is not None:
                cap.release()

    def _read_loop(self, gen: int, cap: Capture) -> None:
        failures = 0
        while True:
            with self._cond:
                while not self.live and len(self._queue) >= self._capacity and self._current(gen):
                    self._cond.wait()  # file source: wait for the consumer instead of dropping
                if not self._current(gen):
                    return
                idx = self._free_buffer()
                self._busy.add(idx)
                self._read_since = time.monotonic()
            buf = self._bufs[idx] if self.reuse_buffers else None
            try:
                ok, frame = cap.read(buf) if buf is not None else cap.read()
            except Exception as e:  # cv2.error from a broken stream, or a fake capture raising
                log.warning("%s: read failed: %s", self.name, e)
                ok, frame = False, None
            ts = time.time()
            with self._cond:
                self._busy.discard(idx)
                if gen != self._gen:
                    return  # abandoned after a stall (or closed): a newer reader owns the source now
                self._read_since = None
                if self._closed:
                    return
                if ok and frame is not None:
                    failures = 0
                    self._bufs[idx] = frame
                    if self.live and len(self._queue) >= self._capacity:
                        self._queue.popleft()  # drop-oldest: the consumer wants what the camera sees now
                        self._dropped += 1
                        self._dropped_pending += 1
                    path = getattr(cap, "last_path", None)
                    self._queue.append((idx, self._seq, ts, path))
                    self._seq += 1
                    self._cond.notify_all()
                    continue
                if not self.live:
                    self._ended = True  # end of file (or an unreadable tail): no reconnects for files
                    self._cond.notify_all()
                    return
                self._failures += 1
                failures += 1
                if failures < self.max_failed_reads:
                    continue
            log.warning("%s: %d reads returned no frame; reopening", self.name, failures)
            return

    # -- consumer side ---------------------------------------------------------------------------------------

    def _abandon_stalled_reader(self) -> None:
        """Called with the lock held when a read has blocked past stall_timeout: start a fresh reader."""
        self._stalls += 1
        self._gen += 1
        self._read_since = None
        log.warning("%s: no frame for %.1f s (stalled or unplugged); reopening", self.name, self.stall_timeout)
        self._thread = self._start_reader(None)

    def read(self) -> tuple[np.ndarray, FrameInfo] | None:
        with self._cond:
            self._held = None
            self._cond.notify_all()  # a file reader may be waiting for room
            while True:
                if self._queue:
                    idx, seq, ts, path = self._queue.popleft()
                    self._held = idx
                    dropped, self._dropped_pending = self._dropped_pending, 0
                    self._frames += 1
                    self._cond.notify_all()
                    frame = self._bufs[idx]
                    assert frame is not None
                    return frame, FrameInfo(seq, ts, dropped, path)
                if self._ended or self._closed:
                    return None
                since = self._read_since
                if self.live and since is not None and time.monotonic() - since > self.stall_timeout:
                    self._abandon_stalled_reader()
                self._cond.wait(self._poll)

    def stats(self) -> SourceStats:
        with self._cond:
            return SourceStats(
                frames=self._frames,
                dropped=self._dropped,
                read_failures=self._failures,
                stalls=self._stalls,
                reconnects=self._reconnects,
                skipped_files=self._skipped_source.skipped if self._skipped_source is not None else 0,
            )

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._gen += 1
            self._closed_event.set()
            self._cond.notify_all()
            thread = self._thread
            frozen = self._read_since is not None and time.monotonic() - self._read_since > self.stall_timeout
        if thread is not threading.current_thread() and not frozen:
            thread.join(timeout=2.0)  # the reader releases its capture itself; a frozen one is left behind


def _positive(x: float) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if v > 0 and v == v and v != float("inf") else None


def _positive_int(x: float) -> int | None:
    v = _positive(x)
    return int(v) if v is not None else None


def _open_hint(kind: str) -> str:
    if kind == "camera":
        return ": is the camera connected and free (not used by another program)? Try another --device index"
    if kind == "gstreamer":
        gst = re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()) is not None
        return ": check the pipeline (it must end in appsink)" if gst else ": this OpenCV build has no GStreamer support"
    if kind == "url":
        return ": check the URL, the network and the credentials"
    if kind == "video":
        return ": not a video OpenCV can decode"
    if kind == PICAMERA2:
        return ": is the camera module connected (`rpicam-hello --list-cameras`) and free (no other program using it)?"
    return ""


def redact_url(url: str) -> str:
    """A URL fit for logs: the password of rtsp://user:pass@host is replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def is_glob(text: str) -> bool:
    return any(c in GLOB_CHARS for c in text)


def is_video_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def glob_files(pattern: str) -> list[Path]:
    return sorted(Path(p) for p in globlib.glob(os.path.expanduser(pattern), recursive=True) if not os.path.isdir(p))  # special files too: refused with a reason when read


def media_files(spec: str | Path, *, videos: bool = False) -> list[Path] | None:
    """The image files (and video files, with `videos`) a folder (recursively, `_io.list_files`) or a glob
    names, sorted; None when `spec` is neither an existing folder nor a glob pattern. The one walk behind
    `open_source` (camera, folders of images) and `predict` (images and videos)."""
    suffixes = IMAGE_SUFFIXES | VIDEO_SUFFIXES if videos else IMAGE_SUFFIXES
    path = Path(str(spec)).expanduser()
    if path.is_dir():
        return list_files(path, suffixes)
    if is_glob(str(spec)):
        return [p for p in glob_files(str(spec)) if p.suffix.lower() in suffixes]
    return None


def parse_spec(spec: str | int | Path) -> tuple[str, Any]:
    """(kind, target) for a source spec: camera index, URL, GStreamer pipeline, video, image(s), folder, glob,
    or `picamera2[:N][:WxH]` (the Raspberry Pi camera module; target: a `Picamera2Spec`)."""
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        return "camera", int(spec)
    text = str(spec).strip()
    if not text:
        raise SourceError("empty source: give a camera index (0), a URL, a video, an image folder or a glob")
    if text.isdigit():
        return "camera", int(text)
    if text.startswith(("/dev/video", "/dev/v4l/")):  # /dev/v4l/by-id/...: a USB camera's name that survives reboots
        return "camera", text
    if text.lower() == PICAMERA2 or text.lower().startswith(PICAMERA2 + ":"):
        return PICAMERA2, parse_picamera2(text)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in URL_SCHEMES:
        return "url", text
    if "!" in text:
        return "gstreamer", text
    path = Path(text).expanduser()
    if path.is_dir():
        files = media_files(path) or []
        if not files:
            raise SourceError(f"{path}: folder contains no images ({', '.join(sorted(s.lstrip('.') for s in ('.jpg', '.png', '.bmp', '.webp')))}, ...)")
        return "images", files
    if path.is_file():
        if is_video_path(path):
            return "video", str(path)
        if is_image_path(path):
            return "images", [path]
        return "video", str(path)  # unknown suffix: let OpenCV try (it says so if it cannot)
    if path.exists():  # a FIFO or a device that is not a camera: opening it could block or never end
        raise SourceError(f"{text}: not a regular file, folder or camera ({special_kind(path.stat().st_mode)})")
    if is_glob(text):
        files = media_files(text) or []
        if not files:
            raise SourceError(f"{text}: no image files match this pattern")
        return "images", files
    raise SourceError(f"{text}: no such file or folder (and not a camera index, URL, GStreamer pipeline or glob)")


def _cv2_factory(kind: str, target: Any, open_timeout_ms: int) -> CaptureFactory:
    def open_capture() -> Capture:
        if kind == "camera":
            cap = cv2.VideoCapture(target)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, where the backend supports it
            return cap
        if kind == "url":
            # Without timeouts FFmpeg can block for minutes on a dead stream; with them a read fails and we reopen.
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, open_timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, open_timeout_ms]
            return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
        if kind == "gstreamer":
            return cv2.VideoCapture(target, cv2.CAP_GSTREAMER)
        return cv2.VideoCapture(target)

    return open_capture


def open_source(
    spec: str | int | Path,
    *,
    live: bool | None = None,
    capture_factory: CaptureFactory | None = None,
    stall_timeout: float = 5.0,
    max_failed_reads: int = 3,
    backoff: tuple[float, float] = (0.5, 10.0),
    queue_size: int = 4,
    reuse_buffers: bool = True,
) -> FrameSource:
    """Open a frame source and start its reader thread.

    spec: camera index (0 or "0"), /dev/videoN, rtsp:// or http(s):// URL, GStreamer pipeline (contains
    '!'), video file, image file, image folder (recursive), glob ("shots/**/*.jpg"), or picamera2[:N][:WxH]
    (the Raspberry Pi camera module N, default 0 at 640x480; needs the Picamera2 library).
    live: override the drop-oldest behaviour (default: cameras, URLs and pipelines are live, files are not).
    capture_factory: zero-argument callable returning a `cv2.VideoCapture`-like object; called for the
    first open and for every reopen (tests pass fakes that return None, freeze and come back).
    stall_timeout: seconds a live read may block before the camera is considered stalled and reopened.
    max_failed_reads: consecutive empty reads of a live source before it is reopened.
    backoff: (first, longest) delay in seconds between reopen attempts; it doubles after each failure.
    """
    try:
        kind, target = parse_spec(spec)
    except SourceError:
        if capture_factory is None:
            raise
        kind, target = "custom", str(spec)
    if kind == "camera":
        name = f"camera {target}"
    elif kind == PICAMERA2:
        name = target.name
    elif kind == "url":
        name = redact_url(target)
    elif kind == "images":
        name = str(spec)
    else:
        name = str(target)
    is_live = live if live is not None else kind in ("camera", "url", "gstreamer", PICAMERA2, "custom")
    if capture_factory is not None:
        factory = capture_factory
    elif kind == "images":
        files = list(target)
        factory = lambda: _ImageFiles(files)  # noqa: E731
    elif kind == PICAMERA2:
        factory = picamera2_factory(target, timeout_s=max(stall_timeout, 1.0))
    else:
        factory = _cv2_factory(kind, target, int(max(stall_timeout, 1.0) * 1000))
    return ThreadedSource(
        name,
        factory,
        kind=kind,
        live=is_live,
        channel_order="RGB" if kind == "images" and capture_factory is None else "BGR",
        queue_size=queue_size,
        stall_timeout=stall_timeout,
        max_failed_reads=max_failed_reads,
        backoff=backoff,
        reuse_buffers=reuse_buffers,
    )


# -- the Raspberry Pi camera module ------------------------------------------------------------------------------
# The camera module (CSI ribbon cable) is driven by libcamera, not V4L2, so OpenCV's VideoCapture cannot read it;
# Raspberry Pi's Picamera2 library can. Picamera2 ships with Raspberry Pi OS (apt: python3-picamera2) and is
# imported only when a picamera2 source is opened, so nothing else needs it. Its frames go through the same
# ThreadedSource as a USB camera: newest frame only, stall and reconnect handling, the same camera loop.

PICAMERA2 = "picamera2"
PICAMERA2_SIZE = (640, 480)  # what a USB camera gives by default; the default model centre-crops 448 of it
_PICAMERA2_SPEC = re.compile(r"picamera2(?::(?P<num>\d+))?(?::(?P<w>\d+)x(?P<h>\d+))?", re.IGNORECASE)


@dataclass(frozen=True)
class Picamera2Spec:
    camera_num: int = 0  # Picamera2's camera number (0 = the first camera; a Compute Module or Pi 5 may have two)
    size: tuple[int, int] = PICAMERA2_SIZE  # (width, height) of the frames

    @property
    def name(self) -> str:
        return f"picamera2 {self.camera_num}"


def parse_picamera2(text: str) -> Picamera2Spec:
    """`picamera2`, `picamera2:1`, `picamera2:0:1280x720` -> Picamera2Spec; anything else is a SourceError."""
    m = _PICAMERA2_SPEC.fullmatch(text.strip())
    if m is None:
        raise SourceError(f"{text}: expected picamera2, picamera2:N or picamera2:N:WIDTHxHEIGHT (e.g. picamera2:0:1280x720)")
    size = (int(m["w"]), int(m["h"])) if m["w"] else PICAMERA2_SIZE
    if not (32 <= size[0] <= 8192 and 32 <= size[1] <= 8192 and size[0] % 2 == 0 and size[1] % 2 == 0):
        raise SourceError(f"{text}: the frame size must be even numbers from 32 to 8192 (e.g. 640x480)")
    return Picamera2Spec(int(m["num"] or 0), size)


def import_picamera2() -> Any:
    """The Picamera2 class, imported now; a SourceError that says how to install it when it cannot be."""
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found]  # only on Raspberry Pi OS
    except ImportError as e:
        raise SourceError(
            f"--device picamera2 needs the Picamera2 library, which this Python cannot import ({e}): on Raspberry Pi OS "
            "`sudo apt install python3-picamera2` and create the venv with --system-site-packages (deploy/raspberry-pi.md)"
        ) from None
    except ValueError as e:  # "numpy.dtype size changed": the apt simplejpeg was built for numpy 1.x, the venv has 2.x
        raise SourceError(
            f"Picamera2 is installed but cannot be imported next to numpy {np.__version__} ({e}): "
            "run `pip install --force-reinstall simplejpeg` in this venv (deploy/raspberry-pi.md)"
        ) from None
    return Picamera2


class Picamera2Capture:
    """One started Picamera2 camera behind the `Capture` protocol.

    The main stream is configured as RGB888, which libcamera lays out as [B, G, R] per pixel: OpenCV's order, so
    the frames need no conversion and the source's channel_order is BGR like every other camera's.
    `capture_array` waits at most `timeout_s` (a camera that stops delivering raises, which the reader counts as
    a failed read and answers with a reopen, as for a USB camera); it returns a fresh copy of the camera buffer,
    so the reader's reusable buffer is not used.
    """

    def __init__(self, camera: Any, size: tuple[int, int], timeout_s: float) -> None:
        self._camera = camera
        self._timeout_s = float(timeout_s)
        self._open = False
        try:
            camera.configure(camera.create_video_configuration(main={"size": tuple(size), "format": "RGB888"}))
            camera.start()
        except Exception:
            self._close_camera()
            raise
        self._open = True
        self._fps = _picamera2_fps(camera)

    def read(self, image: Any = None) -> tuple[bool, np.ndarray | None]:
        if not self._open:
            return False, None
        frame = self._camera.capture_array("main", wait=self._timeout_s)
        if frame is None or frame.ndim != 3 or frame.shape[2] != 3:
            return False, None  # not the RGB888 stream configured above: counted as a failed read
        return True, frame

    def isOpened(self) -> bool:
        return self._open

    def release(self) -> None:
        self._open = False
        self._close_camera()

    def get(self, prop: int) -> float:
        return float(self._fps or 0.0) if prop == cv2.CAP_PROP_FPS else 0.0

    def _close_camera(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        for step in ("stop", "close"):  # close() stops too, but stop first so a failing close still ends the stream
            try:
                getattr(camera, step)()
            except Exception as e:  # a camera unplugged mid-run fails here too; the reopen must still go ahead
                log.warning("picamera2: %s failed: %s", step, e)


def _picamera2_fps(camera: Any) -> float | None:
    """Frames per second from the configured FrameDurationLimits (microseconds), when the camera reports them."""
    try:
        limits = camera.camera_config["controls"]["FrameDurationLimits"]
        return _positive(1e6 / float(limits[0]))
    except Exception:
        return None


def picamera2_factory(spec: Picamera2Spec, *, timeout_s: float = 5.0, camera_class: Callable[..., Any] | None = None) -> CaptureFactory:
    """A capture factory for the camera module `spec`: each call opens, configures and starts the camera.

    camera_class: the Picamera2 class (tests pass a fake); default: imported from picamera2 on the first open.
    """

    def open_capture() -> Capture:
        cls = camera_class or import_picamera2()
        try:
            camera = cls(spec.camera_num)
        except IndexError:  # Picamera2 indexes its list of cameras with camera_num
            found = _count_cameras(cls)
            raise SourceError(f"no Raspberry Pi camera number {spec.camera_num} (found {found}){_open_hint(PICAMERA2)}") from None
        except RuntimeError as e:
            cause = f": {e.__cause__}" if e.__cause__ is not None else ""
            raise SourceError(f"cannot open {spec.name}: {e}{cause}{_open_hint(PICAMERA2)}") from None
        return Picamera2Capture(camera, spec.size, timeout_s)

    return open_capture


def _count_cameras(cls: Any) -> int | str:
    try:
        return len(cls.global_camera_info())
    except Exception:
        return "none"
