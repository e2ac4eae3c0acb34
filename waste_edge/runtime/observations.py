"""What a frame loop observes, as typed, immutable snapshots: one frame, one skipped frame, a camera's decision.

`runtime.pipeline.FramePipeline` makes them; its sinks (`runtime.sinks`, the service's MQTT / SSE / metrics
sinks, the actuation hooks) read them. A decision change is `runtime.decision_event.DecisionEvent`, which
renders the `waste-edge.decision/1` document. The other wire formats built from them live here, each once:

* `FrameResult.event()` / `FrameSkipped.event()`: the JSONL event of a classified / skipped frame (the
  `camera --jsonl` schema; `serve --jsonl` adds `camera` first and `queue` to the latency split);
* `DecisionState.to_dict()`: a camera's current decision as `/api/v1/status` and the SSE `decision` event show it.

A snapshot holds no lock and no reference to the loop, so a reader on another thread may keep it as long as it
likes. The one exception is `FrameResult.image`: the pixels of the frame, valid only during the sink call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from waste_edge.runtime.decision import Decision
from waste_edge.runtime.sources import FrameInfo

@dataclass(frozen=True, slots=True)
class Inference:
    """What an infer callable answers for one frame: its probabilities and how they were made."""

    probs: np.ndarray  # [K] float32, this frame's row
    infer_ms: float  # duration of the inference call that carried the frame
    batch_size: int = 1  # frames in that call
    model_sha256: str | None = None  # the model that answered (the service swaps models); None when unknown


@dataclass(frozen=True, slots=True)
class Latency:
    """Milliseconds of one frame: `read` waiting for it, `queue` waiting for a shared inference call (the
    service only), `infer` the inference call, `total` the whole iteration up to the record sinks (JSONL,
    MQTT, ...): read + queue + infer + decision + pixel sinks (overlay, video, window, stream, collection)."""

    read: float
    infer: float
    total: float
    queue: float | None = None

    def as_dict(self) -> dict[str, float]:
        if self.queue is None:
            return {"read": self.read, "infer": self.infer, "total": self.total}
        return {"read": self.read, "queue": self.queue, "infer": self.infer, "total": self.total}

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.as_dict().items()}


class FrameImage:
    """The pixels of one frame during the sink calls: `raw` as the source delivered it (read-only), and
    `annotated()`, the frame with the overlay drawn, made on the first call into a buffer the loop reuses
    (so the raw frame a collector saves never carries the overlay, whatever the order of the sinks)."""

    __slots__ = ("raw", "channel_order", "_draw", "_annotated")

    def __init__(self, raw: np.ndarray, channel_order: str, draw: Callable[[np.ndarray], np.ndarray]) -> None:
        self.raw = raw
        self.channel_order = channel_order
        self._draw = draw
        self._annotated: np.ndarray | None = None

    def annotated(self) -> np.ndarray:
        if self._annotated is None:
            self._annotated = self._draw(self.raw)
        return self._annotated


@dataclass(frozen=True, slots=True)
class FrameResult:
    """One classified frame: the decision (after smoothing and threshold), the model's raw probabilities, timing."""

    camera: str
    info: FrameInfo
    decision: Decision
    probs: np.ndarray  # the model's raw output for this frame, [K] (read-only)
    classes: tuple[str, ...]
    latency: Latency
    batch_size: int
    model_sha256: str | None
    changed: bool  # the decided label differs from the previous frame's
    image: FrameImage  # the pixels: valid only during the sink call

    def event(self, *, with_camera: bool = False) -> dict[str, Any]:
        """The JSONL event of this frame (`probabilities` raw, `label` / `confidence` the decision)."""
        info = self.info
        return {
            **({"camera": self.camera} if with_camera else {}),
            "frame": info.index,
            "ts": round(info.ts, 3),
            "label": self.decision.label,
            "confidence": round(self.decision.confidence, 6),
            "probabilities": {c: round(float(p), 6) for c, p in zip(self.classes, self.probs)},
            "latency_ms": self.latency.rounded(),
            "dropped": info.dropped,
            **({"path": info.path} if info.path else {}),
        }


@dataclass(frozen=True, slots=True)
class FrameSkipped:
    """A frame the model could not take (None, wrong shape or dtype), or whose inference call failed in a loop that
    survives it (`serve`): an error row in the JSONL, counted, never fatal."""

    camera: str
    info: FrameInfo
    error: str

    def event(self, *, with_camera: bool = False) -> dict[str, Any]:
        info = self.info
        return {**({"camera": self.camera} if with_camera else {}), "frame": info.index, "ts": round(info.ts, 3),
                "error": self.error, "dropped": info.dropped}


@dataclass(frozen=True, slots=True)
class DecisionState:
    """A camera's current decision: what it shows, since when (wall clock), from which frame."""

    label: str
    display_name: str
    confidence: float
    probabilities: tuple[tuple[str, float], ...]  # (class, raw probability of the frame), rounded to 1e-6
    frame: int
    ts: float  # when this frame was decided
    since: float  # when the label last changed

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "display_name": self.display_name, "confidence": self.confidence,
                "probabilities": dict(self.probabilities), "frame": self.frame, "ts": self.ts, "since": self.since}
