"""Waiting until the benchmark's processes are idle: spinning thread pools keep a core busy after a call returns,
and the next target's round must not share the CPU with them. Linux schedstat; elsewhere a short fixed pause.
"""

from __future__ import annotations

import os
import time
from typing import Sequence


def cpu_ns(pid: int) -> int | None:
    """CPU time used so far by every thread of `pid` (Linux schedstat, nanoseconds); None where unknown."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def wait_until_idle(pids: Sequence[int | None], *, poll_s: float = 0.005, busy_share: float = 0.1, max_wait_s: float = 1.0) -> float:
    """Wait until the processes use less than `busy_share` of one core (spinning thread pools have gone to
    sleep), at most `max_wait_s`; returns the seconds waited. Without /proc, a fixed short pause."""
    live = [p for p in pids if p]
    t0 = time.perf_counter()
    last = [cpu_ns(p) for p in live]
    if not live or any(v is None for v in last):
        time.sleep(0.05)
        return time.perf_counter() - t0
    while time.perf_counter() - t0 < max_wait_s:
        time.sleep(poll_s)
        now = [cpu_ns(p) for p in live]
        if any(v is None for v in now):
            break
        used = sum(b - a for a, b in zip(last, now)) / 1e9  # type: ignore[operator]
        last = now
        if used < busy_share * poll_s:
            break
    return time.perf_counter() - t0


