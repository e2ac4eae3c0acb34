"""Temporal smoothing of per-frame probabilities, so the label on screen does not flicker.

A classifier looking at a bin sees nearly the same picture 30 times a second; when the object sits near
the decision boundary, raw per-frame labels flip back and forth. Two remedies, both with hysteresis
(the shown label changes only on clear evidence, not on the first frame that disagrees):

* ema: exponential moving average of the probabilities (alpha = 2 / (N + 1), the N-frame EMA); the label
  switches when another class leads the current one by more than `hysteresis` (a probability margin).
* majority: the last N per-frame labels vote; the label switches only when another class holds a strict
  majority of the window. Confidence is the window's mean probability of the shown class.

All state lives in small arrays allocated once; `update` allocates nothing.
"""

from __future__ import annotations

import numpy as np

SMOOTH_MODES = ("ema", "majority")


class Smoother:
    def __init__(self, num_classes: int, window: int = 1, mode: str = "ema", hysteresis: float = 0.1) -> None:
        if mode not in SMOOTH_MODES:
            raise ValueError(f"smoothing mode must be one of {', '.join(SMOOTH_MODES)}, got {mode!r}")
        if window < 1:
            raise ValueError(f"smoothing window must be >= 1, got {window}")
        if not 0.0 <= hysteresis < 1.0:
            raise ValueError(f"hysteresis must be in [0, 1), got {hysteresis}")
        self.k = int(num_classes)
        self.window = int(window)
        self.mode = mode
        self.hysteresis = float(hysteresis)
        self.alpha = 2.0 / (self.window + 1.0)
        self._smoothed = np.zeros(self.k, dtype=np.float64)
        self._tmp = np.zeros(self.k, dtype=np.float64)
        self._ring_probs = np.zeros((self.window, self.k), dtype=np.float64)
        self._ring_labels = np.zeros(self.window, dtype=np.int64)
        self._counts = np.zeros(self.k, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self.current: int | None = None
        self._filled = 0
        self._pos = 0
        self._smoothed[:] = 0.0
        self._ring_probs[:] = 0.0
        self._counts[:] = 0

    @property
    def probabilities(self) -> np.ndarray:
        """The smoothed probabilities after the last update (a view; copy to keep)."""
        return self._smoothed

    def update(self, probs: np.ndarray) -> tuple[int, float]:
        """Feed one frame's probabilities; returns (shown class index, its smoothed probability)."""
        if self.window == 1:
            np.copyto(self._smoothed, probs)
            self.current = int(probs.argmax())
            return self.current, float(probs[self.current])
        if self.mode == "ema":
            return self._update_ema(probs)
        return self._update_majority(probs)

    def _update_ema(self, probs: np.ndarray) -> tuple[int, float]:
        p = self._smoothed
        if self.current is None:
            np.copyto(p, probs)
        else:
            np.multiply(probs, self.alpha, out=self._tmp)
            p *= 1.0 - self.alpha
            p += self._tmp
        top = int(p.argmax())
        if self.current is None or (top != self.current and p[top] - p[self.current] > self.hysteresis):
            self.current = top
        return self.current, float(p[self.current])

    def _update_majority(self, probs: np.ndarray) -> tuple[int, float]:
        i = self._pos
        if self._filled == self.window:  # evict the oldest frame of the window
            self._counts[self._ring_labels[i]] -= 1
        else:
            self._filled += 1
        label = int(probs.argmax())
        self._ring_labels[i] = label
        self._ring_probs[i] = probs
        self._counts[label] += 1
        self._pos = (i + 1) % self.window
        # window mean of the probabilities (K is tiny: summing N x K floats beats a drifting running sum)
        np.sum(self._ring_probs[: self._filled] if self._filled < self.window else self._ring_probs, axis=0, out=self._smoothed)
        self._smoothed /= self._filled
        leader = int(self._counts.argmax())
        if self.current is None or (leader != self.current and 2 * self._counts[leader] > self._filled):
            self.current = leader
        return self.current, float(self._smoothed[self.current])
