"""One camera of the service: a thread that keeps a source open and runs the frame loop over it.

The loop is `runtime.pipeline.FramePipeline`, the same as `waste-edge camera`'s: read, infer (here through the
shared `InferenceBatcher`), decide, and hand the result to the camera's sinks (JSONL, MJPEG, MQTT, SSE,
metrics, video, collection; the service chooses them). What this module adds is what a service needs and
a one-shot verb does not: a source that cannot be opened is retried with back-off (the camera at a bin may
boot after the computer); `loop` replays files; a state (`starting`, `connected`, `stalled`, ...) that
/healthz and the page show; counters that add up over every source the camera opened; and a typed
`CameraSnapshot` of all of it. Live sources keep their own stall / reconnect handling (`runtime/sources.py`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable, Sequence

from waste_edge.runtime.decision import DecisionOptions
from waste_edge.runtime.observations import FrameResult
from waste_edge.runtime.pipeline import END_OF_SOURCE, FramePipeline, InferFn, Sink
from waste_edge.runtime.sources import FrameSource, SourceError, SourceOptions, SourceStats, open_source
from waste_edge.serve.mjpeg import StreamFrame
from waste_edge.serve.snapshots import STATES, CameraSnapshot, Counters

log = logging.getLogger(__name__)

__all__ = ["STATES", "CameraWorker"]
_SOURCE_COUNTERS = ("dropped", "read_failures", "stalls", "reconnects", "skipped_files")


class _Liveness(Sink):
    """The worker's own sink: a classified frame means the camera is connected and its last error is over."""

    name = "liveness"

    def __init__(self, worker: "CameraWorker") -> None:
        self.worker = worker

    def on_frame(self, result: FrameResult) -> None:
        self.worker._frame_arrived()


class CameraWorker:
    def __init__(
        self,
        cam_id: str,
        spec: str,
        *,
        infer: InferFn,
        classes: Sequence[str],
        display_names: Sequence[str],
        decision: DecisionOptions | None = None,
        source: SourceOptions | None = None,
        sinks: Iterable[Sink] = (),
        stream: StreamFrame | None = None,
        open_backoff: tuple[float, float] = (1.0, 30.0),
        source_factory: Callable[[str], FrameSource] | None = None,
    ) -> None:
        self.id = cam_id
        self.spec = spec
        self.source_options = source or SourceOptions()
        self.stream = stream
        self.open_backoff = open_backoff
        self._open = source_factory or (lambda s: open_source(s, stall_timeout=self.source_options.stall_timeout))
        self._stop = threading.Event()
        self.pipeline = FramePipeline(classes=classes, display_names=display_names, infer=infer, decision=decision,
                                      sinks=[_Liveness(self), *sinks], camera=cam_id, realtime=self.source_options.realtime,
                                      survive_inference_errors=True, latency_window=1000, queue_stage=True, stop=self._stop)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._source: FrameSource | None = None
        self.name = spec
        self.kind = ""
        self._state = "starting"
        self._error = ""
        self.opens = 0
        self._closed_stats = dict.fromkeys(_SOURCE_COUNTERS, 0)  # counters of sources closed before (loops, reopens)
        self._last_frame_at: float | None = None
        self._failures_at_last_frame = 0

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
                    ended = self.pipeline.run(source) == END_OF_SOURCE
                finally:
                    self._retire(source)
                if not ended or not self.source_options.loop:
                    if ended:
                        self._set_state("ended")
                        log.info("camera %s: %s ended", self.id, self.name)
                    break
        except Exception as e:  # a camera must never take the service down: report it as failed
            log.exception("camera %s failed", self.id)
            with self._lock:
                self._error = f"{type(e).__name__}: {e}"
                self._state = "failed"
        finally:
            self.pipeline.close()  # flushes the video container: the file is playable after a SIGTERM
        if self._stop.is_set() and self._state not in ("failed", "ended"):
            self._set_state("stopped")

    def _open_with_retry(self) -> FrameSource | None:
        delay, longest = self.open_backoff
        while not self._stop.is_set():
            try:
                source = self._open(self.spec)
            except SourceError as e:
                with self._lock:
                    self._error = str(e)
                    self._state = "reconnecting"
                log.warning("camera %s: %s; retrying in %.0f s", self.id, e, delay)
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, longest)
                continue
            with self._lock:
                self._source = source
                self.name, self.kind = source.name, source.kind
                self.opens += 1
                self._error = ""
            return source
        return None

    def _retire(self, source: FrameSource) -> None:
        stats = source.stats()
        source.close()
        with self._lock:
            for k in _SOURCE_COUNTERS:
                self._closed_stats[k] += getattr(stats, k)
            self._source = None

    def _frame_arrived(self) -> None:
        with self._lock:
            self._last_frame_at = time.monotonic()
            self._failures_at_last_frame = self._failure_count()
            if self._state != "connected" or self._error:
                self._state = "connected"
                self._error = ""

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
            if time.monotonic() - last <= self.source_options.stall_timeout:
                return "connected"
            trying = self._failure_count() > self._failures_at_last_frame
        return "reconnecting" if trying else "stalled"

    @property
    def error(self) -> str:
        with self._lock:
            return self._error

    def _source_stats(self) -> dict[str, int]:
        with self._lock:
            out = dict(self._closed_stats)
            src = self._source
        if src is not None:
            s: SourceStats = src.stats()
            for k in _SOURCE_COUNTERS:
                out[k] += getattr(s, k)
        return out

    def snapshot(self) -> CameraSnapshot:
        state = self.state
        loop = self.pipeline.snapshot()
        src = self._source_stats()
        with self._lock:
            error, name, kind, last = self._error, self.name, self.kind, self._last_frame_at
        failing = loop.inference_failing
        if failing and not error:
            error = loop.last_error
        counters = Counters(loop.frames, loop.skipped_bad_frames, loop.inference_errors, loop.decision_changes, src["dropped"],
                            src["read_failures"], src["stalls"], src["reconnects"], src["skipped_files"])
        return CameraSnapshot(
            id=self.id, source=name, kind=kind, state=state, error=error, inference_failing=failing, decision=loop.decision,
            fps=round(loop.fps, 3), latency=loop.latency, last_frame_age_s=round(time.monotonic() - last, 3) if last is not None else None,
            counters=counters, labels=loop.labels, last_hour=loop.last_hour, stream_viewers=self.stream.viewers if self.stream else 0,
            sink_failures=loop.sink_failures,
        )
