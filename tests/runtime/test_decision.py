"""The per-frame decision rule and the events made of it (camera and serve use the same rule and event schema)."""

import numpy as np
import pytest

from waste_edge.runtime.decision import UNCERTAIN, Decider, DecisionOptions
from waste_edge.runtime.observations import FrameImage, FrameResult, FrameSkipped, Latency
from waste_edge.runtime.overlay import class_colour
from waste_edge.runtime.sources import FrameInfo


def test_threshold_makes_low_confidence_uncertain_and_keeps_the_confidence():
    d = Decider(["B", "N"], ["biodegradable", "non-biodegradable"], DecisionOptions(threshold=0.7))
    sure = d.update(np.array([0.9, 0.1], np.float32))
    assert (sure.index, sure.label, sure.shown, sure.colour_bgr) == (0, "B", "biodegradable", class_colour(0))
    unsure = d.update(np.array([0.4, 0.6], np.float32))
    assert (unsure.index, unsure.label, unsure.shown, unsure.colour_bgr) == (None, UNCERTAIN, UNCERTAIN, class_colour(None))
    assert unsure.confidence == pytest.approx(0.6)
    assert d.labels == ["B", "N", UNCERTAIN]


def test_smoothing_holds_the_label_through_one_disagreeing_frame():
    d = Decider(["B", "N"], ["b", "n"], DecisionOptions(smooth=5))
    for _ in range(5):
        d.update(np.array([0.9, 0.1]))
    assert d.update(np.array([0.2, 0.8])).label == "B"
    d.reset()
    assert d.update(np.array([0.2, 0.8])).label == "N"


def test_bad_threshold_is_refused():
    with pytest.raises(ValueError, match="threshold"):
        Decider(["B", "N"], ["b", "n"], DecisionOptions(threshold=1.5))


def test_events_carry_the_decision_and_the_raw_probabilities():
    info = FrameInfo(index=7, ts=12.34567, dropped=2, path="x.jpg")
    dec = Decider(["B", "N"], ["b", "n"], DecisionOptions(threshold=0.9)).update(np.array([0.8, 0.2]))
    frame = np.zeros((4, 4, 3), np.uint8)
    result = FrameResult("cam0", info, dec, np.array([0.8, 0.2]), ("B", "N"), Latency(0.5, 1.23456, 2.0, 0.1), 1, None, True,
                         FrameImage(frame, "BGR", lambda f: f))
    ev = result.event(with_camera=True)
    assert list(ev)[0] == "camera" and "camera" not in result.event()
    assert ev["label"] == UNCERTAIN and ev["confidence"] == 0.8
    assert ev["probabilities"] == {"B": 0.8, "N": 0.2}
    assert ev["latency_ms"] == {"read": 0.5, "queue": 0.1, "infer": 1.235, "total": 2.0}
    assert ev["frame"] == 7 and ev["dropped"] == 2 and ev["path"] == "x.jpg"
    assert FrameSkipped("cam0", info, "bad").event() == {"frame": 7, "ts": 12.346, "error": "bad", "dropped": 2}
