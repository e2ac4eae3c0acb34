"""Rolling numbers a live page shows: label counts of the last hour, frames/s, latency percentiles.

Each is O(1) per frame (the camera threads update them) and cheap to read (the status route reads them
under the same small lock); nothing grows with uptime, because the service runs for months.
"""

from __future__ import annotations

import threading
import time
from collections import deque
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


class LatencyWindow:
    """The last `size` latencies per stage (ms); percentiles on demand."""

    def __init__(self, stages: Sequence[str], size: int = 1000) -> None:
        self._values = {s: deque(maxlen=size) for s in stages}
        self._lock = threading.Lock()
        self.last_total_ms = 0.0

    def add(self, **ms: float) -> None:
        with self._lock:
            for stage, v in ms.items():
                self._values[stage].append(v)
            self.last_total_ms = ms.get("total", self.last_total_ms)

    def percentiles(self) -> dict[str, dict[str, float]]:
        with self._lock:
            snap = {s: np.fromiter(v, dtype=np.float64, count=len(v)) for s, v in self._values.items()}
        out = {}
        for stage, arr in snap.items():
            if arr.size:
                p50, p90, p99 = np.percentile(arr, [50, 90, 99])
                out[stage] = {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3)}
        return out
