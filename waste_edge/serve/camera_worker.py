"""One camera of the service: its source, its decision state, its numbers and its stream, in one thread.

The thread reads a frame (the source's own reader thread has decoded it), hands it to the shared
`InferenceBatcher`, turns the probabilities into a decision with the same `Decider` as `waste-edge
camera`, and reports: a JSONL event per frame, a decision message when the label changes, and (only
while someone watches the stream, or asked for a snapshot in the last `SNAPSHOT_DEMAND_S`) an annotated
JPEG at most `stream_fps` times a second. A source that
cannot be opened is retried with back-off (the camera at a bin may boot after the computer); live sources
keep their own stall / reconnect handling (`runtime/sources.py`); `loop` replays files, `realtime` paces
them at their own frame rate as a camera would deliver them.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from waste_edge.runtime.decision import Decider, Decision, error_event, frame_event
from waste_edge.runtime.frames import FrameError, check_frame
from waste_edge.runtime.overlay import draw_overlay
from waste_edge.runtime.sinks import VideoSink
from waste_edge.runtime.sources import FrameInfo, FrameSource, SourceError, SourceStats, open_source
from waste_edge.serve.batcher import InferenceBatcher, InferResult
from waste_edge.serve.stats import HourCounts, LatencyWindow, RateMeter

log = logging.getLogger(__name__)

STATES = ("starting", "connected", "stalled", "reconnecting", "ended", "failed", "stopped")
DOWN_STATES = frozenset({"starting", "stalled", "reconnecting", "failed"})
# Called per classified frame with (worker, frame, FrameInfo, Decision, InferResult): where frame collection
# (--collect) plugs in. The frame is the source's buffer, valid only during the call.
FrameHook = Callable[["CameraWorker", np.ndarray, FrameInfo, Decision, InferResult], None]
SNAPSHOT_DEMAND_S = 30.0
_COUNTERS = ("dropped", "read_failures", "stalls", "reconnects", "skipped_files")


@dataclass
class CameraOptions:
    smooth: int = 1
    smooth_mode: str = "ema"
    hysteresis: float = 0.1
    threshold: float = 0.0
    stall_timeout: float = 5.0
    loop: bool = False  # replay video files / image folders from the start when they end
    realtime: bool = False  # pace file sources at their frame rate (default: as fast as the model goes)
    stream_fps: float = 10.0  # most annotated JPEGs per second for /stream (only while someone watches)
    jpeg_quality: int = 80
    open_backoff: tuple[float, float] = (1.0, 30.0)
    save_dir: Path | None = None  # annotated video per camera: SAVE_DIR/<camera>.mp4


class StreamFrame:
    """The newest annotated JPEG of a camera; `seq` grows with every new one (readers poll it).

    JPEGs cost CPU, so a camera encodes them only while `wanted`: someone watches the MJPEG stream, or
    asked for a snapshot (`latest.jpg`) within the last SNAPSHOT_DEMAND_S seconds (Home Assistant's
    camera card polls it every 10 s, so a watched card keeps it fresh and a closed one costs nothing)."""

    def __init__(self) -> None:
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


class CameraWorker:
    def __init__(
        self,
        cam_id: str,
        spec: str,
        batcher: InferenceBatcher,
        classes: list[str],
        display_names: list[str],
        options: CameraOptions,
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_decision: Callable[["CameraWorker", dict[str, Any]], None] | None = None,
        on_frame: FrameHook | None = None,
        source_factory: Callable[[str], FrameSource] | None = None,
    ) -> None:
        self.id = cam_id
        self.spec = spec
        self.batcher = batcher
        self.classes = classes
        self.options = options
        self.decider = Decider(classes, display_names, smooth=options.smooth, smooth_mode=options.smooth_mode,
                               hysteresis=options.hysteresis, threshold=options.threshold)
        self.on_event = on_event
        self.on_decision = on_decision
        self.on_frame = on_frame
        self.channel_order = "BGR"  # of the current source's frames (set when it opens)
        self._open = source_factory or (lambda s: open_source(s, stall_timeout=options.stall_timeout))
        self.stream = StreamFrame()
        self.hour = HourCounts(self.decider.labels)
        self.rate = RateMeter()
        self.latency = LatencyWindow(("read", "queue", "infer", "total"))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._source: FrameSource | None = None
        self.name = spec
        self.kind = ""
        self._state = "starting"
        self.error = ""
        self.frames = 0
        self.skipped_bad_frames = 0
        self.inference_errors = 0
        self.decision_changes = 0
        self.opens = 0
        self.labels = dict.fromkeys(self.decider.labels, 0)
        self._closed_stats = dict.fromkeys(_COUNTERS, 0)  # counters of sources closed before (loops, reopens)
        self._last_frame_at: float | None = None
        self._failures_at_last_frame = 0
        self.decision: dict[str, Any] | None = None
        self.started_at = time.time()
        self._last_error_at: float | None = None
        self.last_published_label: str | None = None  # "previous" of the service's decision events
        self.video: VideoSink | None = None
        if options.save_dir is not None:
            self.video = VideoSink(Path(options.save_dir) / f"{cam_id}.mp4")

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"waste-edge camera {self.id}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Stop soon: also closes the source, so a read blocked on a dead camera returns at once."""
        self._stop.set()
        with self._lock:
            source = self._source
        if source is not None:
            source.close()

    def join(self, timeout: float = 10.0) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def running(self) -> bool:
        """Delivering frames now (the batcher waits for this many cameras)."""
        return self._state == "connected"

    # -- the thread ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                source = self._open_with_retry()
                if source is None:
                    break
                try:
                    ended = self._read_all(source)
                finally:
                    self._retire(source)
                if not ended or not self.options.loop:
                    if ended:
                        self._set_state("ended")
                        log.info("camera %s: %s ended", self.id, self.name)
                    break
        except Exception as e:  # a camera must never take the service down: report it as failed
            log.exception("camera %s failed", self.id)
            self.error = f"{type(e).__name__}: {e}"
            self._set_state("failed")
        finally:
            if self.video is not None:
                try:
                    self.video.close()  # flushes the container; the file is playable after a SIGTERM
                except Exception as e:
                    log.warning("camera %s: closing video failed: %s", self.id, e)
        if self._stop.is_set() and self._state not in ("failed", "ended"):
            self._set_state("stopped")

    def _open_with_retry(self) -> FrameSource | None:
        delay, longest = self.options.open_backoff
        while not self._stop.is_set():
            try:
                source = self._open(self.spec)
            except SourceError as e:
                self.error = str(e)
                self._set_state("reconnecting")
                log.warning("camera %s: %s; retrying in %.0f s", self.id, e, delay)
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, longest)
                continue
            with self._lock:
                self._source = source
                self.name, self.kind = source.name, source.kind
                self.opens += 1
                self.error = ""
            return source
        return None

    def _retire(self, source: FrameSource) -> None:
        stats = source.stats()
        source.close()
        with self._lock:
            for k in _COUNTERS:
                self._closed_stats[k] += getattr(stats, k)
            self._source = None

    def _read_all(self, source: FrameSource) -> bool:
        """Classify until the source ends (True) or the service stops (False)."""
        order = self.channel_order = source.channel_order  # what an on_frame hook needs to read the frame
        period = 1.0 / source.fps if self.options.realtime and source.fps and not source.live else 0.0
        next_due = time.monotonic()
        last_encode = 0.0
        while not self._stop.is_set():
            t0 = time.perf_counter()
            item = source.read()
            if item is None:
                return not self._stop.is_set()
            frame, info = item
            read_ms = (time.perf_counter() - t0) * 1e3
            if period:  # pacing is not latency: the clock restarts after it
                next_due += period
                wait = next_due - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return False
                if wait < -1.0:
                    next_due = time.monotonic()  # far behind (a slow model): do not sprint to catch up
            t1 = time.perf_counter()
            try:
                check_frame(frame)
                result = self.batcher.infer(frame, order)
            except FrameError as e:
                with self._lock:
                    self.skipped_bad_frames += 1
                if self.on_event is not None:
                    self.on_event(error_event(info, str(e), camera=self.id))
                continue
            except Exception as e:
                if self._stop.is_set():
                    return False
                with self._lock:
                    self.inference_errors += 1
                    self.error = f"inference failed: {e}"
                    self._last_error_at = time.monotonic()
                log.warning("camera %s: inference failed: %s", self.id, e)
                if self.on_event is not None:  # an error row for the frame (a NaN answer is never a label)
                    self.on_event(error_event(info, f"inference failed: {e}", camera=self.id))
                self._stop.wait(0.5)  # a broken model must not spin a core
                continue
            t2 = time.perf_counter()
            decision = self.decider.update(result.probs)
            now = time.time()
            self._record(decision, result.probs, info.index, now)
            if self.on_frame is not None:  # before the overlay is drawn into it; a hook copies what it keeps
                self.on_frame(self, frame, info, decision, result)
            if self.video is not None:
                self._draw(frame, decision, order)
                self.video.write(frame, order)
                drawn = True
            else:
                drawn = False
            if self.stream.wanted and (t2 - last_encode) * self.options.stream_fps >= 1.0:
                last_encode = t2
                self._encode(frame, decision, order, drawn)
            t3 = time.perf_counter()
            lat = {"read": read_ms, "queue": max(0.0, (t2 - t1) * 1e3 - result.infer_ms), "infer": result.infer_ms, "total": read_ms + (t3 - t1) * 1e3}
            self.latency.add(**lat)
            if self.on_event is not None:
                self.on_event(frame_event(info, decision, result.probs, self.classes, lat, camera=self.id))
        return False

    def _record(self, decision: Decision, probs: np.ndarray, frame_index: int, now: float) -> None:
        changed = self.decision is None or self.decision["label"] != decision.label
        with self._lock:
            self.frames += 1
            self.labels[decision.label] += 1
            self.hour.add(decision.label, now)
            self.rate.tick()
            self._last_frame_at = time.monotonic()
            self._failures_at_last_frame = self._failure_count()
            if self._state != "connected" or self.error:
                self._state = "connected"
                self.error = ""
            self.decision = {
                "label": decision.label,
                "display_name": decision.shown,
                "confidence": round(decision.confidence, 6),
                "probabilities": {c: round(float(p), 6) for c, p in zip(self.classes, probs)},
                "frame": frame_index,
                "ts": round(now, 3),
                "since": round(now, 3) if changed else self.decision["since"],  # type: ignore[index]
            }
            if changed:
                self.decision_changes += 1
            message = dict(self.decision) if changed else None
        if message is not None and self.on_decision is not None:
            self.on_decision(self, message)

    def _draw(self, frame: np.ndarray, decision: Decision, order: str) -> None:
        with self._lock:
            fps = self.rate.rate()
        lat = self.latency.last_total_ms
        draw_overlay(frame, label=decision.shown, confidence=decision.confidence, fps=fps, latency_ms=lat,
                     colour_bgr=decision.colour_bgr, channel_order=order)

    def _encode(self, frame: np.ndarray, decision: Decision, order: str, drawn: bool) -> None:
        if not drawn:
            self._draw(frame, decision, order)
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if order == "RGB" else frame
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(self.options.jpeg_quality)])
        if ok:
            self.stream.put(buf.tobytes(), time.time())

    # -- reading the state -----------------------------------------------------------------------------------

    def _failure_count(self) -> int:
        src = self._source
        if src is None:
            return 0
        s = src.stats()
        return s.stalls + s.read_failures + s.reconnects

    def _set_state(self, state: str) -> None:
        with self._lock:
            self._state = state

    @property
    def state(self) -> str:
        with self._lock:
            state, last = self._state, self._last_frame_at
            if state != "connected" or last is None:
                return state
            if time.monotonic() - last <= self.options.stall_timeout:
                return "connected"
            trying = self._failure_count() > self._failures_at_last_frame
        return "reconnecting" if trying else "stalled"

    @property
    def inference_failing(self) -> bool:
        """The last inference raised and none has succeeded since."""
        with self._lock:
            err, ok = self._last_error_at, self._last_frame_at
        return err is not None and (ok is None or err > ok)

    def source_stats(self) -> dict[str, int]:
        with self._lock:
            out = dict(self._closed_stats)
            src = self._source
        if src is not None:
            s: SourceStats = src.stats()
            for k in _COUNTERS:
                out[k] += getattr(s, k)
        return out

    def status(self) -> dict[str, Any]:
        state = self.state
        with self._lock:
            counters = {
                "frames": self.frames,
                "skipped_bad_frames": self.skipped_bad_frames,
                "inference_errors": self.inference_errors,
                "decision_changes": self.decision_changes,
            }
            decision = dict(self.decision) if self.decision else None
            labels = dict(self.labels)
            last_hour = self.hour.totals()
            fps = self.rate.rate()
            last = self._last_frame_at
        counters.update(self.source_stats())
        return {
            "id": self.id,
            "source": self.name,
            "kind": self.kind,
            "state": state,
            "error": self.error,
            "inference_failing": self.inference_failing,
            "decision": decision,
            "fps": round(fps, 3),
            "latency_ms": self.latency.percentiles(),
            "last_frame_age_s": round(time.monotonic() - last, 3) if last is not None else None,
            "counters": counters,
            "labels": labels,
            "last_hour": last_hour,
            "stream_viewers": self.stream.viewers,
        }

