"""The camera loop: read the newest frame, classify it, smooth, report; survive bad frames and bad cameras.

Per frame the loop does only what the frame needs: a read (the reader thread has already decoded it),
one inference, an O(K) smoothing update and, when asked, one JSONL line. Overlays are drawn only when a
window is shown or a video saved. That keeps the loop's own cost near 1 ms, the budget for adding less
than 10 % on top of a ~3 ms model.

Decisions recorded here:
* threshold: when the (smoothed) confidence of the shown class is below `threshold`, the label is
  reported as "uncertain" (constant `UNCERTAIN`) and drawn grey; the event still carries the
  probabilities and the confidence, so nothing is hidden. The rule and the event's schema live in
  `runtime/decision.py`, shared with `serve`.
* JSONL events: `probabilities` are the model's raw output for that frame; `label` and `confidence` are
  the decision after smoothing and threshold. `frame` is the source's frame number (gaps are frames the
  live reader dropped), `ts` the wall-clock capture time, `dropped` the frames dropped since the
  previous event (so the events' `dropped` sum to the summary's total). A frame the model cannot take
  (None, wrong shape or dtype) is skipped and counted; its event carries `error` instead of a label.
* latency_ms: `read` is the time spent waiting for the frame, `infer` the classifier call (validation,
  channel flip, inference), `total` the whole iteration up to the JSONL write (read + infer + smoothing
  + overlay + video + window).
"""

from __future__ import annotations

import logging
import threading
import time
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from waste_edge._io import file_sha256
from waste_edge.runtime.classifier import Classifier
from waste_edge.runtime.decision import UNCERTAIN, Decider, error_event, frame_event
from waste_edge.runtime.decision_event import DecisionEvent, DecisionSink
from waste_edge.runtime.frames import FrameError
from waste_edge.runtime.overlay import draw_overlay
from waste_edge.runtime.sinks import JsonlSink, VideoSink, open_window
from waste_edge.runtime.sources import FrameSource

if TYPE_CHECKING:
    from waste_edge.runtime.collect import Collector

log = logging.getLogger(__name__)

__all__ = ["UNCERTAIN", "CameraConfig", "CameraSummary", "run_camera"]


@dataclass
class CameraConfig:
    show: bool = True  # open a window when a display and a GUI-enabled OpenCV exist
    save: str | Path | None = None  # annotated video (.mp4 / .avi / ...)
    jsonl: str | Path | None = None  # events to this file, or "-" for stdout
    smooth: int = 1  # frames of temporal smoothing (1 = off)
    smooth_mode: str = "ema"  # ema | majority
    hysteresis: float = 0.1  # ema: probability margin a new class needs to take over
    threshold: float = 0.0  # below this confidence the label is UNCERTAIN
    max_frames: int | None = None  # stop after this many classified frames
    save_fps: float | None = None  # frame rate of the saved video (default: the source's, else 30)


@dataclass
class CameraSummary:
    source: str
    backend: str
    frames: int = 0  # frames classified
    dropped: int = 0  # frames the live reader replaced by newer ones
    skipped_bad_frames: int = 0  # frames the model could not take (None, wrong shape / dtype)
    read_failures: int = 0  # reads that returned nothing
    stalls: int = 0  # reads that blocked past the stall timeout
    reconnects: int = 0  # successful reopens of the source
    skipped_files: int = 0  # undecodable images of a folder / glob source
    elapsed_s: float = 0.0
    mean_fps: float = 0.0
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # {read|infer|total: {p50, p90, p99, mean}}
    labels: dict[str, int] = field(default_factory=dict)  # frames per shown label
    stop_reason: str = ""  # end of source | max frames | interrupted | window closed | stopped
    lost: list[str] = field(default_factory=list)  # per output that could not write everything: what was lost and why

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        def trio(kind: str) -> str:
            d = self.latency_ms.get(kind)
            return f"{d['p50']:.2f} / {d['p90']:.2f} / {d['p99']:.2f}" if d else "n/a"

        labels = ", ".join(f"{k} {v}" for k, v in self.labels.items()) or "none"
        return "\n".join(
            [
                f"{self.source}: {self.frames} frames in {self.elapsed_s:.1f} s, mean {self.mean_fps:.1f} FPS (backend {self.backend}); stopped: {self.stop_reason}",
                f"dropped {self.dropped}, bad frames skipped {self.skipped_bad_frames}, read failures {self.read_failures}, "
                f"stalls {self.stalls}, reconnects {self.reconnects}" + (f", undecodable files {self.skipped_files}" if self.skipped_files else ""),
                f"latency ms p50 / p90 / p99: total {trio('total')}, infer {trio('infer')}, read {trio('read')}",
                f"labels: {labels}",
                *(f"lost: {line}" for line in self.lost),
            ]
        )


def _percentiles(values: array) -> dict[str, float]:
    if not len(values):
        return {}
    arr = np.frombuffer(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(arr.mean())}


def run_camera(
    classifier: Classifier,
    source: FrameSource,
    config: CameraConfig | None = None,
    *,
    stop: threading.Event | None = None,
    collector: Collector | None = None,
    on_decision: DecisionSink | None = None,
) -> CameraSummary:
    """Classify frames from `source` until it ends, `max_frames`, Ctrl-C, the window closes or `stop` is set.

    Ctrl-C (KeyboardInterrupt) ends the loop cleanly and still returns the summary. The source is not
    closed here: whoever opened it closes it. `collector` (a `runtime.collect.Collector`, owned and closed
    by the caller) is offered every frame with its decision confidence, before any overlay is drawn on it.
    `on_decision` (a `DecisionSink`, e.g. the `--on-decision` hook; owned and closed by the caller) gets a
    `DecisionEvent` for camera "cam0" whenever the decided label changes.
    """
    cfg = config or CameraConfig()
    classes = classifier.classes
    order = source.channel_order
    decider = Decider(classes, classifier.display_names, smooth=cfg.smooth, smooth_mode=cfg.smooth_mode, hysteresis=cfg.hysteresis, threshold=cfg.threshold)
    jsonl = JsonlSink(cfg.jsonl) if cfg.jsonl is not None else None
    window = open_window(f"waste-edge: {source.name}") if cfg.show else None
    video: VideoSink | None = None
    summary = CameraSummary(source=source.name, backend=f"{classifier.backend} ({classifier.provider})")
    lat_read, lat_infer, lat_total = array("d"), array("d"), array("d")
    label_counts = dict.fromkeys(decider.labels, 0)
    max_frames = cfg.max_frames or 0
    model_sha256 = file_sha256(classifier.path) if on_decision is not None else ""
    last_label: str | None = None
    frames = skipped = 0
    closing = False
    fps = 0.0
    last_total_ms = 0.0
    t_start = t_end = time.perf_counter()
    try:
        if cfg.save is not None:
            video = VideoSink(cfg.save, cfg.save_fps or source.fps or 30.0)
        draw = window is not None or video is not None
        while True:
            if stop is not None and stop.is_set():
                summary.stop_reason = "stopped"
                break
            t0 = time.perf_counter()
            item = source.read()
            if item is None:
                summary.stop_reason = "end of source"
                break
            frame, info = item
            t1 = time.perf_counter()
            try:
                probs = classifier.predict_proba(frame, order)[0]
            except FrameError as e:
                skipped += 1
                if skipped <= 3 or skipped % 100 == 0:
                    log.warning("%s: frame %d skipped (%s); %d so far", source.name, info.index, e, skipped)
                if jsonl is not None:
                    jsonl.write(error_event(info, str(e)))
                continue
            t2 = time.perf_counter()
            decision = decider.update(probs)
            if collector is not None:
                collector.offer(frame, probs, decision.confidence, index=info.index, channel_order=order)
            label_counts[decision.label] += 1
            if on_decision is not None and decision.label != last_label:
                on_decision.on_decision(DecisionEvent("cam0", decision.label, decision.shown, round(decision.confidence, 6),
                                                      {c: round(float(p), 6) for c, p in zip(classes, probs)}, last_label,
                                                      info.index, model_sha256, time.time()))
                last_label = decision.label
            if draw:
                draw_overlay(frame, label=decision.shown, confidence=decision.confidence, fps=fps, latency_ms=last_total_ms,
                             colour_bgr=decision.colour_bgr, channel_order=order)
                if video is not None:
                    video.write(frame, order)
                if window is not None and not window.show(frame, order):
                    summary.stop_reason = "window closed"
                    closing = True
            t3 = time.perf_counter()
            read_ms, infer_ms, total_ms = (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t0) * 1e3
            lat_read.append(read_ms)
            lat_infer.append(infer_ms)
            lat_total.append(total_ms)
            if t3 > t_end and frames:
                inst = 1.0 / (t3 - t_end)
                fps = inst if fps == 0.0 else 0.9 * fps + 0.1 * inst
            t_end = t3
            last_total_ms = total_ms
            if jsonl is not None:
                jsonl.write(frame_event(info, decision, probs, classes, {"read": read_ms, "infer": infer_ms, "total": total_ms}))
            frames += 1
            if closing:
                break
            if max_frames and frames >= max_frames:
                summary.stop_reason = "max frames"
                break
    except KeyboardInterrupt:
        summary.stop_reason = "interrupted"
    finally:
        t_stop = time.perf_counter()
        for sink in (jsonl, video, window):
            if sink is not None:
                try:
                    sink.close()
                except Exception as e:  # closing must not hide the summary
                    log.warning("closing %s failed: %s", type(sink).__name__, e)
    summary.lost = [line for sink in (jsonl, video) if sink is not None and (line := sink.health.summary())]
    stats = source.stats()
    summary.frames = frames
    summary.skipped_bad_frames = skipped
    summary.dropped = stats.dropped
    summary.read_failures = stats.read_failures
    summary.stalls = stats.stalls
    summary.reconnects = stats.reconnects
    summary.skipped_files = stats.skipped_files
    summary.elapsed_s = (t_end if frames else t_stop) - t_start
    summary.mean_fps = frames / summary.elapsed_s if frames and summary.elapsed_s > 0 else 0.0
    summary.latency_ms = {k: v for k, v in (("read", _percentiles(lat_read)), ("infer", _percentiles(lat_infer)), ("total", _percentiles(lat_total))) if v}
    summary.labels = {k: v for k, v in label_counts.items() if v}
    return summary
