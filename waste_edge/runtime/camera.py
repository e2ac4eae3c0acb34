"""`waste-edge camera` (and `demo`): one `FramePipeline` over one source, with the sinks the user asked for, and
a summary at the end.

The loop itself (read, infer, decide, hand to sinks; survive bad frames) is `runtime/pipeline.py`, shared
with every camera of `serve`. What is this verb's own: the sinks it opens (a window, an annotated video, a
JSONL file or stdout, frame collection), latency percentiles over the whole run, and `CameraSummary`.

JSONL events (`runtime/observations.py`): `probabilities` are the model's raw output for that frame; `label`
and `confidence` the decision after smoothing and threshold (below `threshold` the label is `UNCERTAIN`).
`frame` is the source's frame number (gaps are frames the live reader dropped), `ts` the wall-clock capture
time, `dropped` the frames dropped since the previous event (so the events' `dropped` sum to the summary's
total). A frame the model cannot take (None, wrong shape or dtype) is skipped and counted; its event carries
`error` instead of a label. `latency_ms`: `read` waiting for the frame, `infer` the classifier call,
`total` the whole iteration up to the JSONL write (read + infer + decision + overlay + video + window).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Iterable, TYPE_CHECKING

from waste_edge._io import file_sha256
from waste_edge._options import option, positive_int
from waste_edge.runtime.classifier import Classifier
from waste_edge.runtime.decision import UNCERTAIN, DecisionOptions
from waste_edge.runtime.pipeline import FramePipeline, Sink, direct_infer
from waste_edge.runtime.sinks import AnnotatedVideo, JsonlEvents, JsonlSink, LiveWindow, OutputOptions, VideoSink, open_window
from waste_edge.runtime.sources import DEVICE_FORMS, FrameSource

if TYPE_CHECKING:
    from waste_edge.runtime.collector import Collector

log = logging.getLogger(__name__)

CAMERA_ID = "cam0"  # how decision events name the one camera of this verb (as `serve` names its first)
__all__ = ["UNCERTAIN", "CameraConfig", "CameraSummary", "run_camera"]


@dataclass
class CameraConfig:
    """Classify frames from a camera, stream, video, image folder or glob. Live sources keep only the newest
    frame (drops are counted); a stalled or unplugged camera is reopened with backoff while the loop keeps
    running. The window shows label, confidence, FPS and latency; press q or Esc, or Ctrl-C, to stop. A summary
    (frames, drops, p50/p90/p99 latency, mean FPS) is printed at the end."""

    EPILOG: ClassVar[str] = (
        f"{DEVICE_FORMS}\nBelow --threshold the label reads 'uncertain'. JSONL events: frame, ts, label, confidence, "
        "probabilities, latency_ms {read, infer, total}, dropped.\n"
        "example: waste-edge camera --device 0 --model lite0-int8.onnx --smooth 5 --jsonl events.jsonl")

    output: OutputOptions = field(default_factory=OutputOptions)  # window, annotated video, JSONL
    decision: DecisionOptions = field(default_factory=DecisionOptions)  # smoothing and threshold
    max_frames: int | None = option(None, "--max-frames", type=positive_int, metavar="N",
                                    help="stop after N classified frames (default: the whole source; a camera runs until q or Ctrl-C)")
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
    sink_failures: dict[str, int] = field(default_factory=dict)  # calls that raised, per sink (the loop went on)
    lost: list[str] = field(default_factory=list)  # per output that could not write everything: what was lost and why

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        def trio(kind: str) -> str:
            d = self.latency_ms.get(kind)
            return f"{d['p50']:.2f} / {d['p90']:.2f} / {d['p99']:.2f}" if d else "n/a"

        labels = ", ".join(f"{k} {v}" for k, v in self.labels.items()) or "none"
        lines = [
            f"{self.source}: {self.frames} frames in {self.elapsed_s:.1f} s, mean {self.mean_fps:.1f} FPS (backend {self.backend}); stopped: {self.stop_reason}",
            f"dropped {self.dropped}, bad frames skipped {self.skipped_bad_frames}, read failures {self.read_failures}, "
            f"stalls {self.stalls}, reconnects {self.reconnects}" + (f", undecodable files {self.skipped_files}" if self.skipped_files else ""),
            f"latency ms p50 / p90 / p99: total {trio('total')}, infer {trio('infer')}, read {trio('read')}",
            f"labels: {labels}",
            *(f"lost: {line}" for line in self.lost),
        ]
        if self.sink_failures:
            lines.append("outputs that failed (the loop went on): " + ", ".join(f"{k} {v} times" for k, v in self.sink_failures.items()))
        return "\n".join(lines)


class _Timing(Sink):
    """Start and end of the classified frames (the run's elapsed time counts from the start to the last frame)."""

    name = "timing"

    def __init__(self) -> None:
        self.last: float | None = None

    def on_frame(self, result: Any) -> None:
        self.last = time.perf_counter()


def run_camera(
    classifier: Classifier,
    source: FrameSource,
    config: CameraConfig | None = None,
    *,
    stop: threading.Event | None = None,
    collector: Collector | None = None,
    sinks: Iterable[Sink] = (),
) -> CameraSummary:
    """Classify frames from `source` until it ends, `max_frames`, Ctrl-C, the window closes or `stop` is set.

    Ctrl-C (KeyboardInterrupt) ends the loop cleanly and still returns the summary. The source is not
    closed here: whoever opened it closes it; so is `collector` (a `runtime.collector.Collector`), which is
    offered every frame with its decision confidence, without the overlay, and so are `sinks`, more sinks to
    feed (decision hooks, ...)."""
    cfg = config or CameraConfig()
    out = cfg.output
    timing = _Timing()
    opened: list[Sink] = []
    writers: list[JsonlSink | VideoSink] = []  # files that count what they could not write (`lost` in the summary)
    try:
        if out.jsonl is not None:
            jsonl = JsonlSink(out.jsonl)
            writers.append(jsonl)
            opened.append(JsonlEvents(jsonl))
        if out.save is not None:
            video = VideoSink(out.save, cfg.save_fps or source.fps or 30.0)
            writers.append(video)
            opened.append(AnnotatedVideo(video))
        window = open_window(f"waste-edge: {source.name}") if out.show else None
        if window is not None:
            opened.append(LiveWindow(window))
    except BaseException:
        for s in opened:
            s.close()
        raise
    extra = list(sinks)
    if collector is not None:
        from waste_edge.runtime.collector import CollectFrames

        extra.insert(0, CollectFrames(collector))
    sha = collector.model_sha256 if collector is not None else (file_sha256(classifier.path) if extra else None)
    pipeline = FramePipeline(classes=classifier.classes, display_names=classifier.display_names, infer=direct_infer(classifier, sha),
                             decision=cfg.decision, sinks=[*extra, *opened, timing], camera=CAMERA_ID, max_frames=cfg.max_frames,
                             stop=stop)
    t_start = time.perf_counter()
    try:
        reason = pipeline.run(source)
    finally:
        t_stop = time.perf_counter()
        for s in opened:  # sinks handed in are their caller's to close
            try:
                s.close()
            except Exception as e:  # closing must not hide the summary
                log.warning("closing %s failed: %s", s.name, e)
    snap = pipeline.snapshot()
    stats = source.stats()
    elapsed = ((timing.last if timing.last is not None else t_stop) - t_start) if snap.frames else t_stop - t_start
    return CameraSummary(
        source=source.name, backend=f"{classifier.backend} ({classifier.provider})", frames=snap.frames, dropped=stats.dropped,
        skipped_bad_frames=snap.skipped_bad_frames, read_failures=stats.read_failures, stalls=stats.stalls, reconnects=stats.reconnects,
        skipped_files=stats.skipped_files, elapsed_s=elapsed, mean_fps=snap.frames / elapsed if snap.frames and elapsed > 0 else 0.0,
        latency_ms={stage: p.full() for stage, p in snap.latency}, labels={k: v for k, v in snap.labels if v}, stop_reason=reason,
        sink_failures=dict(snap.sink_failures), lost=[line for w in writers if (line := w.health.summary())],
    )
