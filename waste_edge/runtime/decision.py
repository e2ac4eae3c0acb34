"""The per-frame decision rule: smoothing with hysteresis, then the confidence threshold.

A frame's probabilities become a decision in two moves, smoothing (with hysteresis, `smoothing.Smoother`)
and the confidence threshold: below `threshold` the label is `UNCERTAIN` and drawn grey, so a sorting
machine never acts on a guess. The rule's settings are one option group (`DecisionOptions`: --smooth,
--smooth-mode, --hysteresis, --threshold on every verb that decides); the one place that runs it per frame
is `runtime.pipeline.FramePipeline`, the loop of `camera`, `demo` and every camera of `serve`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np

from waste_edge._options import float_in, int_in, option, probability
from waste_edge.runtime.overlay import class_colour
from waste_edge.runtime.smoothing import SMOOTH_MODES, Smoother

UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class DecisionOptions:
    """How a stream of per-frame probabilities becomes a decision (the decision option group)."""

    GROUP: ClassVar[tuple[str, str | None]] = ("decision (smoothing and threshold)", None)

    smooth: int = option(1, "--smooth", type=int_in(1, 1000), metavar="N",
                         help="temporal smoothing over N frames, with hysteresis (default: %(default)s = off)")
    smooth_mode: str = option("ema", "--smooth-mode", choices=SMOOTH_MODES,
                              help="ema of probabilities or majority vote of labels (default: %(default)s)")
    hysteresis: float = option(0.1, "--hysteresis", type=float_in(0.0, 1.0, open_hi=True), metavar="P",
                               help="ema: probability lead a new label needs to take over (default: %(default)s)")
    threshold: float = option(0.0, "--threshold", type=probability, metavar="P",
                              help="below this confidence the decision is 'uncertain' (default: %(default)s)")


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

    def __init__(self, classes: Sequence[str], display_names: Sequence[str], options: DecisionOptions | None = None) -> None:
        opts = options or DecisionOptions()
        if not 0.0 <= opts.threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {opts.threshold}")
        self.classes = list(classes)
        self.display_names = list(display_names)
        self.options = opts
        self.threshold = float(opts.threshold)
        self.smoother = Smoother(len(self.classes), opts.smooth, opts.smooth_mode, opts.hysteresis)
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
