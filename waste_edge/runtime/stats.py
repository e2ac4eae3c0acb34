"""Rolling numbers of a frame loop: label counts of the last hour, frames/s, latency percentiles.

Each is O(1) per frame (the loop's thread updates them) and cheap to read. They are not thread-safe on their
own: `runtime.pipeline.PipelineStats` guards them with one lock, so the service's HTTP threads read a
consistent snapshot while a camera thread writes. A `LatencyWindow` is bounded (the last N frames, what a
live page shows of a service that runs for months) or unbounded (every frame of a `camera` run, whose end
summary reports the percentiles of the whole run).
"""

from __future__ import annotations

import time
from array import array
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np


class HourCounts:
    """Counts per label over the last `window_s` seconds, in one-minute buckets (a ring of 60)."""

    def __init__(self, labels: Sequence[str], window_s: int = 3600, bucket_s: int = 60) -> None:
        self.labels = list(labels)
        self.bucket_s = int(bucket_s)
        self.n = max(1, int(window_s) // self.bucket_s)
        self._counts = np.zeros((self.n, len(self.labels)), dtype=np.int64)
        self._stamp = np.full(self.n, -1, dtype=np.int64)  # which minute each bucket holds
        self._index = {label: i for i, label in enumerate(self.labels)}

    def add(self, label: str, now: float | None = None) -> None:
        minute = int((time.time() if now is None else now) // self.bucket_s)
        slot = minute % self.n
        if self._stamp[slot] != minute:
            self._stamp[slot] = minute
            self._counts[slot] = 0
        self._counts[slot, self._index[label]] += 1

    def totals(self, now: float | None = None) -> dict[str, int]:
        minute = int((time.time() if now is None else now) // self.bucket_s)
        live = self._stamp > minute - self.n
        sums = self._counts[live].sum(axis=0)
        return {label: int(v) for label, v in zip(self.labels, sums)}


class RateMeter:
    """Events per second over the last `window_s` seconds (frames/s of a camera)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = float(window_s)
        self._times: deque[float] = deque()

    def tick(self, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        self._times.append(t)
        self._trim(t)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        t = time.monotonic() if now is None else now
        self._trim(t)
        if len(self._times) < 2:
            return 0.0
        span = max(t - self._times[0], self._times[-1] - self._times[0])
        return (len(self._times) - 1) / span if span > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Latency percentiles of one stage, in milliseconds."""

    p50: float
    p90: float
    p99: float
    mean: float

    def rounded(self) -> dict[str, float]:
        """The status / MQTT form: p50, p90, p99 to the microsecond."""
        return {"p50": round(self.p50, 3), "p90": round(self.p90, 3), "p99": round(self.p99, 3)}

    def full(self) -> dict[str, float]:
        """The `camera` summary form: p50, p90, p99 and mean, unrounded."""
        return {"p50": self.p50, "p90": self.p90, "p99": self.p99, "mean": self.mean}


class LatencyWindow:
    """Latencies per stage (ms): the last `size` frames, or every frame when `size` is None."""

    def __init__(self, stages: Sequence[str], size: int | None = 1000) -> None:
        self.stages = tuple(stages)
        self._values: dict[str, deque[float] | array] = {s: (deque(maxlen=size) if size else array("d")) for s in self.stages}
        self.last_total_ms = 0.0

    def add(self, **ms: float) -> None:
        for stage, v in ms.items():
            self._values[stage].append(v)
        self.last_total_ms = ms.get("total", self.last_total_ms)

    def values(self) -> dict[str, np.ndarray]:
        """A copy of the values per stage (cheap: take it under the caller's lock, compute outside it)."""
        return {stage: (np.array(v, dtype=np.float64) if isinstance(v, array) else np.fromiter(v, np.float64, len(v)))
                for stage, v in self._values.items()}

    def percentiles(self) -> dict[str, Percentiles]:
        """Stages with at least one value, in the order they were declared."""
        return percentiles(self.values())


def percentiles(values: dict[str, np.ndarray]) -> dict[str, Percentiles]:
    """p50 / p90 / p99 / mean per stage of `LatencyWindow.values()`; stages without values are left out."""
    out = {}
    for stage, arr in values.items():
        if arr.size:
            p50, p90, p99 = np.percentile(arr, [50, 90, 99])
            out[stage] = Percentiles(float(p50), float(p90), float(p99), float(arr.mean()))
    return out
