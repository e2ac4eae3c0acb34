"""Frames of several cameras in one inference call, when that is faster.

Each camera thread hands its frame to `infer()` and blocks until its probabilities are back. One
inference thread collects the frames waiting at that moment (up to `max_batch`; it waits at most
`wait_ms` for the other running cameras to catch up, so cameras that run in step share every call) and
runs them as one call (mode `on`). Mode `off` lets every camera thread call the model itself, at the same
time, as N separate `camera` loops would. Which is faster depends on the model, the frame size and the
machine (a GPU gains from batches; on a small, busy CPU N concurrent calls can win, see
benchmarks/results/serve-cpu.md), so mode `auto` measures it on the first batch that forms, with those very
frames: one call of N frames against N concurrent calls, interleaved, 3 rounds. It keeps the faster way,
says so in `/api/v1/status`, and measures again after a model swap.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from waste_edge.runtime.frames import check_frame
from waste_edge.runtime.observations import Inference
from waste_edge.serve.config import BATCH_MODES
from waste_edge.serve.model_holder import ModelHolder
from waste_edge.serve.snapshots import BatchingStatus

log = logging.getLogger(__name__)


@dataclass
class _Request:
    frame: np.ndarray
    order: str
    done: threading.Event = field(default_factory=threading.Event)
    result: Inference | None = None
    error: BaseException | None = None


class InferenceBatcher:
    def __init__(
        self,
        holder: ModelHolder,
        *,
        mode: str = "auto",
        max_batch: int = 8,
        wait_ms: float = 2.0,
        expected: Callable[[], int] = lambda: 1,
    ) -> None:
        if mode not in BATCH_MODES:
            raise ValueError(f"batch mode must be one of {', '.join(BATCH_MODES)}, got {mode!r}")
        self.holder = holder
        self.mode = mode
        self.max_batch = max(1, int(max_batch))
        self.wait_s = max(0.0, float(wait_ms)) / 1e3
        self.expected = expected  # how many cameras are running now (the batch to wait for)
        self._queue: list[_Request] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.calls = 0
        self.frames = 0
        self._calibrated_for: str | None = None
        self.use_batches: bool = mode == "on"
        self.calibration: dict[str, Any] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.mode != "off" and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="waste-edge inference", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            pending, self._queue = self._queue, []
            self._cond.notify_all()
        for req in pending:
            req.error = RuntimeError("service stopping")
            req.done.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)

    # -- camera side -----------------------------------------------------------------------------------------

    def _go_direct(self) -> bool:
        if self.mode == "off":
            return True
        if self.mode == "auto" and self.expected() <= 1:
            return True  # one camera has no one to share a call with: the hand-over to the inference thread is pure cost
        return self.mode == "auto" and not self.use_batches and self._calibrated_for == self.holder.current.sha256

    def infer(self, frame: np.ndarray, channel_order: str) -> Inference:
        """Probabilities of one HxWx3 uint8 frame (a frame loop's infer callable, `runtime.pipeline.InferFn`).

        Raises `FrameError` for a frame the model cannot take, before it joins a batch (one bad frame never fails
        another camera's), and what the model raised."""
        check_frame(frame)
        if self._go_direct():
            return self._direct(frame, channel_order)
        req = _Request(frame, channel_order)
        with self._cond:
            if self._stopping:
                raise RuntimeError("service stopping")
            self._queue.append(req)
            self._cond.notify_all()
        req.done.wait()
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    def _direct(self, frame: np.ndarray, order: str) -> Inference:
        with self.holder.use() as model:
            t0 = time.perf_counter()
            probs = model.classifier.predict_proba(frame, order)[0]
            ms = (time.perf_counter() - t0) * 1e3
        with self._cond:
            self.calls += 1
            self.frames += 1
        return Inference(probs, ms, 1, model.sha256)

    # -- inference thread ------------------------------------------------------------------------------------

    def _take(self) -> list[_Request]:
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return []
            deadline = time.monotonic() + self.wait_s
            while len(self._queue) < min(self.max_batch, max(1, self.expected())) and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            by_order: dict[str, list[_Request]] = {}
            for req in batch:
                by_order.setdefault(req.order, []).append(req)
            for order, reqs in by_order.items():
                try:
                    self._run(order, reqs)
                except BaseException as e:  # a failing model fails these frames, never the thread
                    for req in reqs:
                        req.error = e
                        req.done.set()

    def _run(self, order: str, reqs: list[_Request]) -> None:
        frames = [r.frame for r in reqs]
        with self.holder.use() as model:
            clf = model.classifier
            if len(frames) > 1 and self.mode == "auto" and self._calibrated_for != model.sha256:
                self._calibrate(clf, frames, order, model.sha256)
            if len(frames) == 1 or self.use_batches:
                t0 = time.perf_counter()
                probs = clf.predict_proba(frames, order)
                ms = (time.perf_counter() - t0) * 1e3
                results = [Inference(p, ms, len(frames), model.sha256) for p in probs]
                calls = 1
            else:  # auto chose concurrent calls: the frames queued meanwhile go one by one, later ones go direct
                results = []
                for f in frames:
                    t0 = time.perf_counter()
                    p = clf.predict_proba(f, order)[0]
                    results.append(Inference(p, (time.perf_counter() - t0) * 1e3, 1, model.sha256))
                calls = len(frames)
        with self._cond:
            self.calls += calls
            self.frames += len(frames)
        for req, res in zip(reqs, results):
            req.result = res
            req.done.set()

    def _calibrate(self, clf: Any, frames: list[np.ndarray], order: str, sha: str) -> None:
        """Time one call of N frames against N concurrent calls (what mode off does), interleaved
        (A B A B A B), on the frames at hand."""
        batched, concurrent = [], []
        with ThreadPoolExecutor(max_workers=len(frames), thread_name_prefix="waste-edge calibrate") as pool:
            for _ in range(3):
                t0 = time.perf_counter()
                clf.predict_proba(frames, order)
                t1 = time.perf_counter()
                list(pool.map(lambda f: clf.predict_proba(f, order), frames))
                t2 = time.perf_counter()
                batched.append((t1 - t0) * 1e3)
                concurrent.append((t2 - t1) * 1e3)
        b, c = statistics.median(batched), statistics.median(concurrent)
        self.use_batches = b < c
        self._calibrated_for = sha
        self.calibration = {
            "frames": len(frames),
            "batched_ms": round(b, 3),
            "concurrent_ms": round(c, 3),
            "chosen": "batched" if self.use_batches else "concurrent",
        }
        log.info("batching: %d frames in one call %.1f ms vs %d concurrent calls %.1f ms: %s", len(frames), b, len(frames), c, self.calibration["chosen"])

    def status(self) -> BatchingStatus:
        with self._cond:
            calls, frames = self.calls, self.frames
        return BatchingStatus(self.mode, self.use_batches if self.mode != "off" else False, self.max_batch, round(self.wait_s * 1e3, 3),
                              calls, frames, round(frames / calls, 3) if calls else 0.0, self.calibration)
