"""The per-frame decision step shared by every loop that classifies a stream: `camera` and `serve`.

A frame's probabilities become a decision in two moves, smoothing (with hysteresis, `smoothing.Smoother`)
and the confidence threshold: below `threshold` the label is `UNCERTAIN` and drawn grey, so a sorting
machine never acts on a guess. Both loops must agree on that rule and on the JSONL event it produces,
so it lives here once; a loop adds only what is its own (the camera id of `serve`, its latency split).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from waste_edge.runtime.overlay import class_colour
from waste_edge.runtime.smoothing import Smoother
from waste_edge.runtime.sources import FrameInfo

UNCERTAIN = "uncertain"


@dataclass(frozen=True, slots=True)
class Decision:
    """What a loop shows for one frame: the (smoothed) class or UNCERTAIN, and its confidence."""

    index: int | None  # class index; None when the decision is UNCERTAIN
    label: str  # class name (e.g. "B") or UNCERTAIN
    shown: str  # display name (e.g. "biodegradable") or UNCERTAIN
    confidence: float  # smoothed probability of the leading class (also when UNCERTAIN)
    colour_bgr: tuple[int, int, int]


class Decider:
    """Smoother + threshold over one stream; `update(probs)` costs an O(K) smoothing step and no allocation
    beyond the small `Decision` it returns."""

    def __init__(
        self,
        classes: Sequence[str],
        display_names: Sequence[str],
        *,
        smooth: int = 1,
        smooth_mode: str = "ema",
        hysteresis: float = 0.1,
        threshold: float = 0.0,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        self.classes = list(classes)
        self.display_names = list(display_names)
        self.threshold = float(threshold)
        self.smoother = Smoother(len(self.classes), smooth, smooth_mode, hysteresis)
        self._uncertain = Decision(None, UNCERTAIN, UNCERTAIN, 0.0, class_colour(None))
        self._by_index = [Decision(i, c, d, 0.0, class_colour(i)) for i, (c, d) in enumerate(zip(self.classes, self.display_names))]

    @property
    def labels(self) -> list[str]:
        """Every label a decision can carry: the classes, then UNCERTAIN."""
        return [*self.classes, UNCERTAIN]

    def update(self, probs: np.ndarray) -> Decision:
        idx, conf = self.smoother.update(probs)
        base = self._uncertain if conf < self.threshold else self._by_index[idx]
        return Decision(base.index, base.label, base.shown, conf, base.colour_bgr)

    def reset(self) -> None:
        """Forget the smoothing state (a new source, a swapped model)."""
        self.smoother.reset()


def frame_event(
    info: FrameInfo,
    decision: Decision,
    probs: np.ndarray,
    classes: Sequence[str],
    latency_ms: Mapping[str, float],
    **extra: Any,
) -> dict[str, Any]:
    """The JSONL event of one classified frame (the `camera --jsonl` schema; `extra` keys go first).

    `probabilities` are the model's raw output for the frame; `label` and `confidence` the decision after
    smoothing and threshold."""
    return {
        **extra,
        "frame": info.index,
        "ts": round(info.ts, 3),
        "label": decision.label,
        "confidence": round(decision.confidence, 6),
        "probabilities": {c: round(float(p), 6) for c, p in zip(classes, probs)},
        "latency_ms": {k: round(v, 3) for k, v in latency_ms.items()},
        "dropped": info.dropped,
        **({"path": info.path} if info.path else {}),
    }


def error_event(info: FrameInfo, error: str, **extra: Any) -> dict[str, Any]:
    """The JSONL event of a frame the model could not take (counted and skipped, never fatal)."""
    return {**extra, "frame": info.index, "ts": round(info.ts, 3), "error": error, "dropped": info.dropped}
