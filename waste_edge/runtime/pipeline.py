"""The one frame loop: source -> infer -> decision -> sinks. `camera`, `demo` and every camera of `serve` run it.

Per frame `FramePipeline.run` reads the newest frame (the source's reader thread has decoded it), hands it to
the infer callable (`direct_infer(classifier)`, or the service's batcher, which shares one call among
cameras), turns the probabilities into a decision with the ONE `Decider` of this loop (smoothing with
hysteresis, then the confidence threshold; `runtime/decision.py`), keeps the numbers (`PipelineStats`), and
hands typed snapshots (`runtime/observations.py`) to its sinks.

Sinks are small objects with one interface (`Sink`): `on_frame(FrameResult)`, `on_skip(FrameSkipped)`,
`on_decision(DecisionEvent)`, `close()`; each hook is optional. Two kinds, by when they run:

* pixel sinks (`reads_pixels = True`: video, window, MJPEG stream, frame collection) run first, while the
  frame's buffer is valid; their time counts in the frame's `total` latency, as drawing and writing video
  always did;
* record sinks (JSONL, metrics, MQTT, SSE, decision hooks) run after, with the final latency.

A decision change is handed to every sink before the frame itself. A sink that raises is counted
(`SinkSet.failures`, in the summary and /metrics), logged a few times, and the loop goes on: an MQTT broker
or a full disk never stops the classification. Two exceptions pass: `StopPipeline` (a sink asks the loop to
end after this frame: the window closed) and a reader that went away from stdout (`camera --jsonl - | head`),
which ends the verb as a closed pipe always does.

The loop's own cost stays near 1 ms per frame (the budget for adding < 10 % to a ~3 ms model): O(K)
decision, a few counters, two small frozen objects; the overlay is drawn only when a sink asks for it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Sequence

import numpy as np

from waste_edge._outputs import is_broken_pipe
from waste_edge.runtime.decision import Decider, Decision, DecisionOptions
from waste_edge.runtime.frames import FrameError
from waste_edge.runtime.decision_event import DecisionEvent
from waste_edge.runtime.observations import (
    DecisionState,
    FrameImage,
    FrameResult,
    FrameSkipped,
    Inference,
    Latency,
)
from waste_edge.runtime.overlay import draw_overlay
from waste_edge.runtime.sources import FrameInfo, FrameSource
from waste_edge.runtime.stats import HourCounts, LatencyWindow, Percentiles, RateMeter, percentiles

log = logging.getLogger(__name__)

InferFn = Callable[[np.ndarray, str], Inference]

# Why a run of the loop ended.
END_OF_SOURCE, MAX_FRAMES, STOPPED, INTERRUPTED = "end of source", "max frames", "stopped", "interrupted"


def direct_infer(classifier, model_sha256: str | None = None) -> InferFn:  # type: ignore[no-untyped-def]
    """An infer callable that calls `classifier` (a `runtime.classifier.Classifier`) in the loop's own thread."""

    def infer(frame: np.ndarray, channel_order: str) -> Inference:
        t0 = time.perf_counter()
        probs = classifier.predict_proba(frame, channel_order)[0]
        return Inference(probs, (time.perf_counter() - t0) * 1e3, 1, model_sha256)

    return infer


# -- sinks ---------------------------------------------------------------------------------------------------


class StopPipeline(Exception):
    """Raised by a sink to end the loop after the current frame (the window closed, the user pressed q)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Sink:
    """Where a loop's observations go. Override the hooks you need; the others do nothing.

    `name` labels the sink's failures in the summary and /metrics. `reads_pixels` sinks run before the
    record sinks and may use `result.image` (see the module docstring)."""

    name = "sink"
    reads_pixels = False

    def on_frame(self, result: FrameResult) -> None:
        """A classified frame."""

    def on_skip(self, skipped: FrameSkipped) -> None:
        """A frame the model could not take."""

    def on_decision(self, event: DecisionEvent) -> None:
        """The decided label changed (called before `on_frame` of the same frame); the first decision counts."""

    def close(self) -> None:
        """The loop has ended: flush and release."""


class SinkSet:
    """The sinks of one loop, each isolated: a failure is counted and logged, and the next sink still runs."""

    def __init__(self, sinks: Iterable[Sink]) -> None:
        self.sinks = list(sinks)
        self.pixels = [s for s in self.sinks if s.reads_pixels]
        self.records = [s for s in self.sinks if not s.reads_pixels]
        self.failures: dict[str, int] = {}
        self.stop_reason: str | None = None

    def _failed(self, sink: Sink, hook: str, e: Exception) -> None:
        if is_broken_pipe(e):
            raise e  # the reader of our stdout went away: the verb ends as a closed pipe does
        n = self.failures[sink.name] = self.failures.get(sink.name, 0) + 1
        if n <= 3 or n % 1000 == 0:
            log.warning("%s sink: %s failed (%d so far): %s", sink.name, hook, n, e)

    def _each(self, sinks: Sequence[Sink], hook: str, value: object) -> None:
        for s in sinks:
            try:
                getattr(s, hook)(value)
            except StopPipeline as e:
                self.stop_reason = self.stop_reason or e.reason
            except Exception as e:
                self._failed(s, hook, e)

    def frame(self, sinks: Sequence[Sink], result: FrameResult) -> None:
        self._each(sinks, "on_frame", result)

    def skip(self, skipped: FrameSkipped) -> None:
        self._each(self.sinks, "on_skip", skipped)

    def decision(self, event: DecisionEvent) -> None:
        self._each(self.sinks, "on_decision", event)

    def close(self) -> None:
        for s in self.sinks:
            try:
                s.close()
            except Exception as e:  # closing must not hide the summary
                log.warning("closing the %s sink failed: %s", s.name, e)


# -- numbers -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PipelineSnapshot:
    """The numbers of one loop at one moment (what /api/v1/status, /metrics, MQTT summaries and the `camera`
    summary are built from)."""

    frames: int  # classified
    skipped_bad_frames: int  # the model could not take them
    inference_errors: int  # inference calls that raised (the service goes on after them)
    decision_changes: int
    labels: tuple[tuple[str, int], ...]  # frames per decided label, every label (classes, then uncertain)
    last_hour: tuple[tuple[str, int], ...]
    fps: float  # over the last 5 s
    latency: tuple[tuple[str, Percentiles], ...]  # per stage, stages with values only
    decision: DecisionState | None
    last_frame_at: float | None  # time.monotonic() of the last classified frame
    last_error: str  # the last inference error ("" when none)
    last_error_at: float | None  # time.monotonic() of it
    sink_failures: tuple[tuple[str, int], ...]

    @property
    def inference_failing(self) -> bool:
        """The last inference raised and none has succeeded since."""
        return self.last_error_at is not None and (self.last_frame_at is None or self.last_error_at > self.last_frame_at)


class PipelineStats:
    """The counters and rolling numbers of one loop, under one lock (the loop writes, any thread snapshots)."""

    def __init__(self, labels: Sequence[str], stages: Sequence[str], latency_window: int | None) -> None:
        self.lock = threading.Lock()
        self.frames = self.skipped = self.inference_errors = self.changes = 0
        self.labels = dict.fromkeys(labels, 0)
        self.hour = HourCounts(labels)
        self.rate = RateMeter()
        self.latency = LatencyWindow(stages, latency_window)
        self.decision: DecisionState | None = None
        self.last_frame_at: float | None = None
        self.last_error = ""
        self.last_error_at: float | None = None

    def snapshot(self, sink_failures: dict[str, int]) -> PipelineSnapshot:
        with self.lock:  # copies only: the percentiles are computed after the loop has its lock back
            counts = (self.frames, self.skipped, self.inference_errors, self.changes, tuple(self.labels.items()))
            hour, fps, latency = tuple(self.hour.totals().items()), self.rate.rate(), self.latency.values()
            state = (self.decision, self.last_frame_at, self.last_error, self.last_error_at)
        return PipelineSnapshot(*counts, hour, fps, tuple(percentiles(latency).items()), *state, tuple(sink_failures.items()))


# -- the loop ------------------------------------------------------------------------------------------------


class FramePipeline:
    """One camera's loop. `run(source)` classifies until the source ends or the loop is stopped; it may be
    called again with a reopened or replayed source, and the decision state and numbers carry on.

    `infer`: `direct_infer(classifier)` or the service's batcher. `survive_inference_errors`: the service goes on
    after an inference call raises (counted, retried after a pause); the `camera` verb ends with the error.
    `latency_window`: frames kept for the latency percentiles (None: every frame, for a run's summary).
    """

    def __init__(
        self,
        *,
        classes: Sequence[str],
        display_names: Sequence[str],
        infer: InferFn,
        decision: DecisionOptions | None = None,
        sinks: Iterable[Sink] = (),
        camera: str = "",
        max_frames: int | None = None,
        realtime: bool = False,
        survive_inference_errors: bool = False,
        latency_window: int | None = None,
        queue_stage: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        self.camera = camera
        self.classes = tuple(classes)
        self.infer = infer
        self.decider = Decider(classes, display_names, decision or DecisionOptions())
        self.sinks = SinkSet(sinks)
        self.max_frames = max_frames or 0
        self.realtime = realtime
        self.survive_inference_errors = survive_inference_errors
        self.stop_event = stop or threading.Event()
        self._queue_stage = queue_stage
        stages = ("read", "queue", "infer", "total") if queue_stage else ("read", "infer", "total")
        self.stats = PipelineStats(self.decider.labels, stages, latency_window)
        self._canvas: np.ndarray | None = None

    @property
    def labels(self) -> list[str]:
        return self.decider.labels

    def snapshot(self) -> PipelineSnapshot:
        return self.stats.snapshot(self.sinks.failures)

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        """Close every sink (once the loop has ended for good)."""
        self.sinks.close()

    # -- per frame -------------------------------------------------------------------------------------------

    def _drawer(self, decision: Decision, order: str) -> Callable[[np.ndarray], np.ndarray]:
        """Draws the overlay (label, confidence, frames/s, last latency) on a copy of the frame, in a reused buffer."""

        def draw(raw: np.ndarray) -> np.ndarray:
            if self._canvas is None or self._canvas.shape != raw.shape:
                self._canvas = np.empty_like(raw)
            np.copyto(self._canvas, raw)
            with self.stats.lock:
                fps, lat = self.stats.rate.rate(), self.stats.latency.last_total_ms
            draw_overlay(self._canvas, label=decision.shown, confidence=decision.confidence, fps=fps, latency_ms=lat,
                         colour_bgr=decision.colour_bgr, channel_order=order)
            return self._canvas

        return draw

    def _skip(self, frame_info: FrameInfo, error: FrameError, source_name: str) -> None:
        with self.stats.lock:
            self.stats.skipped += 1
            n = self.stats.skipped
        if n <= 3 or n % 100 == 0:
            log.warning("%s: frame %d skipped (%s); %d so far", source_name, frame_info.index, error, n)
        self.sinks.skip(FrameSkipped(self.camera, frame_info, str(error)))

    def _inference_failed(self, frame_info: FrameInfo, e: Exception) -> None:
        """Counted, logged, and an error row for the frame (a NaN answer is never a label)."""
        with self.stats.lock:
            self.stats.inference_errors += 1
            self.stats.last_error = f"inference failed: {e}"
            self.stats.last_error_at = time.monotonic()
        log.warning("%s: inference failed: %s", self.camera or "camera", e)
        self.sinks.skip(FrameSkipped(self.camera, frame_info, f"inference failed: {e}"))

    def _decide(self, inf: Inference, frame_index: int, now: float) -> tuple[Decision, DecisionEvent | None]:
        """The decision of one frame, recorded in the numbers; the change it makes, if any."""
        decision = self.decider.update(inf.probs)
        probs = tuple((c, round(float(p), 6)) for c, p in zip(self.classes, inf.probs))
        st = self.stats
        with st.lock:
            prev = st.decision
            changed = prev is None or prev.label != decision.label
            stamp = round(now, 3)
            state = st.decision = DecisionState(decision.label, decision.shown, round(decision.confidence, 6), probs, frame_index,
                                                stamp, stamp if changed else prev.since)  # type: ignore[union-attr]
            st.frames += 1
            st.changes += int(changed)
            st.labels[decision.label] += 1
            st.hour.add(decision.label, now)
            st.rate.tick()
            st.last_frame_at = time.monotonic()
        if not changed:
            return decision, None
        return decision, DecisionEvent(self.camera, state.label, state.display_name, state.confidence, dict(probs),
                                       prev.label if prev is not None else None, frame_index, inf.model_sha256 or "", now)

    def run(self, source: FrameSource) -> str:
        """Classify frames of `source` until it ends (END_OF_SOURCE), `max_frames` (MAX_FRAMES), `stop()` (STOPPED),
        Ctrl-C (INTERRUPTED) or a sink's `StopPipeline` (its reason). The source is not closed here."""
        order = source.channel_order
        period = 1.0 / source.fps if self.realtime and source.fps and not source.live else 0.0
        next_due = time.monotonic()
        stop, sinks, stats = self.stop_event, self.sinks, self.stats
        sinks.stop_reason = None
        try:
            while True:
                if stop.is_set():
                    return STOPPED
                t0 = time.perf_counter()
                item = source.read()
                if item is None:
                    return STOPPED if stop.is_set() else END_OF_SOURCE
                frame, info = item
                t1 = time.perf_counter()
                read_ms = (t1 - t0) * 1e3
                if period:  # pacing is not latency: the clock restarts after it
                    next_due += period
                    wait = next_due - time.monotonic()
                    if wait > 0 and stop.wait(wait):
                        return STOPPED
                    if wait < -1.0:
                        next_due = time.monotonic()  # far behind (a slow model): do not sprint to catch up
                    t1 = time.perf_counter()
                try:
                    inf = self.infer(frame, order)
                except FrameError as e:
                    self._skip(info, e, source.name)
                    continue
                except Exception as e:
                    if not self.survive_inference_errors:
                        raise
                    if stop.is_set():
                        return STOPPED
                    self._inference_failed(info, e)
                    stop.wait(0.5)  # a broken model must not spin a core
                    continue
                call_ms = (time.perf_counter() - t1) * 1e3
                queue = max(0.0, call_ms - inf.infer_ms) if self._queue_stage else None
                decision, change = self._decide(inf, info.index, time.time())
                image = FrameImage(frame, order, self._drawer(decision, order))
                result = FrameResult(self.camera, info, decision, inf.probs, self.classes, Latency(read_ms, inf.infer_ms, read_ms + call_ms, queue),
                                     inf.batch_size, inf.model_sha256, change is not None, image)
                if change is not None:
                    sinks.decision(change)
                if sinks.pixels:
                    sinks.frame(sinks.pixels, result)
                latency = Latency(read_ms, inf.infer_ms, read_ms + (time.perf_counter() - t1) * 1e3, queue)
                with stats.lock:
                    stats.latency.add(**latency.as_dict())
                if sinks.records:
                    sinks.frame(sinks.records, replace(result, latency=latency))
                if sinks.stop_reason is not None:
                    return sinks.stop_reason
                if self.max_frames and stats.frames >= self.max_frames:
                    return MAX_FRAMES
        except KeyboardInterrupt:
            return INTERRUPTED
