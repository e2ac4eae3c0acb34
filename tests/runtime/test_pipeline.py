"""The frame loop's sink contract (runtime/pipeline.py), on an in-memory source and a scripted model.

What every sink may rely on: a decision change reaches every sink before its frame; pixel sinks run before
record sinks, which get the final latency; a sink that raises is counted and the others still get every
frame; `StopPipeline` ends the loop after the frame with its reason; a reader that left stdout ends it too.
"""

from __future__ import annotations

import errno
import time

import numpy as np
import pytest

from waste_edge.runtime.decision import DecisionOptions
from waste_edge.runtime.observations import Inference
from waste_edge.runtime.pipeline import END_OF_SOURCE, FramePipeline, Sink, StopPipeline
from waste_edge.runtime.sources import FrameInfo, FrameSource, SourceStats

CLASSES = ("B", "N")


class ListSource(FrameSource):
    """`n` small BGR frames, then the end (a file source)."""

    name, kind, live, channel_order, fps, frame_count = "list", "custom", False, "BGR", None, None

    def __init__(self, n: int) -> None:
        self.n, self.i = n, 0

    def read(self) -> tuple[np.ndarray, FrameInfo] | None:
        if self.i >= self.n:
            return None
        self.i += 1
        return np.full((8, 8, 3), self.i, np.uint8), FrameInfo(self.i - 1, time.time())

    def stats(self) -> SourceStats:
        return SourceStats(self.i, 0, 0, 0, 0, 0)

    def close(self) -> None:
        pass


def scripted(labels: str, fail: frozenset[int] = frozenset()):  # type: ignore[no-untyped-def]
    """An infer callable answering B or N per frame (from `labels`), raising on the frame numbers in `fail`."""
    calls = iter(range(10**6))

    def infer(frame: np.ndarray, order: str) -> Inference:
        k = next(calls)
        if k in fail:
            raise RuntimeError(f"model broke on call {k}")
        p = 0.9 if labels[k] == "B" else 0.1
        return Inference(np.array([p, 1 - p], np.float32), 0.5, 1, "f" * 64)

    return infer


class Recorder(Sink):
    def __init__(self, log: list, name: str, pixels: bool = False) -> None:
        self.log, self.name, self.reads_pixels = log, name, pixels

    def on_frame(self, result) -> None:  # type: ignore[no-untyped-def]
        self.log.append((self.name, "frame", result.info.index, result.latency.total))

    def on_skip(self, skipped) -> None:  # type: ignore[no-untyped-def]
        self.log.append((self.name, "skip", skipped.info.index, skipped.error))

    def on_decision(self, event) -> None:  # type: ignore[no-untyped-def]
        self.log.append((self.name, "decision", event.frame, event.label, event.previous))


class Raises(Sink):
    name = "broken"

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def on_frame(self, result) -> None:  # type: ignore[no-untyped-def]
        raise self.error


def loop(labels: str, sinks: list[Sink], **kw) -> FramePipeline:  # type: ignore[no-untyped-def]
    return FramePipeline(classes=CLASSES, display_names=("bio", "non-bio"), infer=kw.pop("infer", scripted(labels)),
                         decision=DecisionOptions(), sinks=sinks, camera="cam0", **kw)


def test_order_decision_before_frame_pixels_before_records_with_the_final_latency():
    log: list = []
    p = loop("BBNN", [Recorder(log, "record"), Recorder(log, "pixels", pixels=True)])
    assert p.run(ListSource(4)) == END_OF_SOURCE
    assert [e[:3] for e in log if e[2] == 2] == [("record", "decision", 2), ("pixels", "decision", 2), ("pixels", "frame", 2), ("record", "frame", 2)]
    assert [e[3:] for e in log if e[1] == "decision"] == [("B", None), ("B", None), ("N", "B"), ("N", "B")]  # one change each sink
    for k in range(4):
        (px,) = [e[3] for e in log if e[:3] == ("pixels", "frame", k)]
        (rec,) = [e[3] for e in log if e[:3] == ("record", "frame", k)]
        assert rec >= px  # the record sinks' total includes the pixel sinks' time
    snap = p.snapshot()
    assert (snap.frames, snap.decision_changes, dict(snap.labels)["B"], dict(snap.labels)["N"]) == (4, 2, 2, 2)


def test_a_sink_that_raises_is_counted_and_the_others_get_every_frame():
    log: list = []
    p = loop("BNBNBN", [Raises(ValueError("disk on fire")), Recorder(log, "after")])
    assert p.run(ListSource(6)) == END_OF_SOURCE
    assert [e[2] for e in log if e[1] == "frame"] == list(range(6))
    assert dict(p.snapshot().sink_failures) == {"broken": 6}


def test_stop_pipeline_ends_the_loop_after_that_frame_with_its_reason():
    class Window(Sink):
        name, reads_pixels = "window", True

        def on_frame(self, result) -> None:  # type: ignore[no-untyped-def]
            if result.info.index == 2:
                raise StopPipeline("window closed")

    log: list = []
    p = loop("BBBBBB", [Window(), Recorder(log, "record")])
    assert p.run(ListSource(6)) == "window closed"
    assert [e[2] for e in log if e[1] == "frame"] == [0, 1, 2]  # the frame that asked still reaches the records
    assert p.snapshot().sink_failures == ()


def test_a_reader_that_left_stdout_ends_the_loop():
    p = loop("BBBB", [Raises(OSError(errno.EPIPE, "Broken pipe"))])
    with pytest.raises(OSError):
        p.run(ListSource(4))
    assert p.snapshot().frames == 1


def test_a_failed_inference_in_a_surviving_loop_is_an_error_row_and_counted():
    log: list = []
    p = loop("B" * 5, [Recorder(log, "jsonl")], infer=scripted("B" * 5, fail=frozenset({1})), survive_inference_errors=True)
    assert p.run(ListSource(4)) == END_OF_SOURCE
    assert [e for e in log if e[1] == "skip"] == [("jsonl", "skip", 1, "inference failed: model broke on call 1")]
    snap = p.snapshot()
    assert (snap.frames, snap.inference_errors, snap.last_error) == (3, 1, "inference failed: model broke on call 1")
    assert not snap.inference_failing  # later frames were answered


def test_without_survival_the_inference_error_ends_the_run():
    p = loop("BBBB", [], infer=scripted("BBBB", fail=frozenset({0})))
    with pytest.raises(RuntimeError, match="model broke"):
        p.run(ListSource(2))
