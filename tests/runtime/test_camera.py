import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import save_image, synthetic_rgb
from tests.runtime.fakes import FakeCapture, ScriptedCamera
from waste_edge.cli import main
from waste_edge.runtime.sinks import OutputOptions
from waste_edge.runtime.camera import UNCERTAIN, CameraConfig, run_camera
from waste_edge.runtime.decision import DecisionOptions
from waste_edge.runtime.sources import FrameInfo, FrameSource, SourceStats, open_source

pytestmark = pytest.mark.timeout(60)

PATTERN = "BBNNBNNB"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A video written by OpenCV from generated frames, standing in for a camera: labels follow PATTERN."""
    path = tmp_path_factory.mktemp("v") / "bin.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (64, 48))
    for i, label in enumerate(PATTERN * 2):
        writer.write(np.ascontiguousarray(synthetic_rgb(label, i)[..., ::-1]))
    writer.release()
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_loop_over_a_video_classifies_every_frame_and_writes_events(clf, video, tmp_path):
    events_path = tmp_path / "events.jsonl"
    with open_source(video) as src:
        summary = run_camera(clf, src, CameraConfig(output=OutputOptions(show=False, jsonl=events_path)))
    n = len(PATTERN) * 2
    assert summary.frames == n and summary.stop_reason == "end of source"
    assert summary.dropped == 0 and summary.skipped_bad_frames == 0 and summary.reconnects == 0
    assert summary.mean_fps > 0 and summary.elapsed_s > 0
    for kind in ("read", "infer", "total"):
        lat = summary.latency_ms[kind]
        assert 0 <= lat["p50"] <= lat["p90"] <= lat["p99"]
    assert summary.latency_ms["total"]["p50"] >= summary.latency_ms["infer"]["p50"]
    events = read_jsonl(events_path)
    assert [e["frame"] for e in events] == list(range(n))
    assert "".join(e["label"] for e in events) == PATTERN * 2
    for e in events:
        assert list(e) == ["frame", "ts", "label", "confidence", "probabilities", "latency_ms", "dropped"]  # schema, in order
        assert set(e["probabilities"]) == {"B", "N"}
        assert e["confidence"] == pytest.approx(max(e["probabilities"].values()), abs=1e-5)
        assert list(e["latency_ms"]) == ["read", "infer", "total"]
        assert e["latency_ms"]["total"] >= e["latency_ms"]["infer"]
        assert e["dropped"] == 0
    assert summary.labels == {"B": 8, "N": 8}
    text = summary.summary()
    assert "16 frames" in text and "p50 / p90 / p99" in text and "end of source" in text


def test_loop_survives_a_camera_that_returns_none_freezes_sends_garbage_and_comes_back(clf, tmp_path):
    unfreeze = threading.Event()
    cam = ScriptedCamera(
        [
            # delay: a 20 frames/s camera, slower than the loop, so no frame (not even a bad one) is dropped
            FakeCapture(["frame", "bad", "frame", "none", "none", "none"], delay=0.05),  # a 2-D frame, then 3 empty reads
            FakeCapture(["frame", "frame", "freeze"], unfreeze=unfreeze, delay=0.05),  # then it hangs
            FakeCapture(opened=False),  # unplugged: reopen fails once
            FakeCapture(["frame", "bad", "frame"], label="N", delay=0.05),  # back
        ]
    )
    events_path = tmp_path / "events.jsonl"
    src = open_source(0, capture_factory=cam, stall_timeout=0.3, backoff=(0.01, 0.05))
    try:
        summary = run_camera(clf, src, CameraConfig(output=OutputOptions(show=False, jsonl=events_path), max_frames=10))
    finally:
        src.close()
        unfreeze.set()
    assert summary.stop_reason == "max frames" and summary.frames == 10
    assert summary.skipped_bad_frames == 2
    assert summary.read_failures == 3
    assert summary.stalls == 1
    assert summary.reconnects == 2
    events = read_jsonl(events_path)
    errors = [e for e in events if "error" in e]
    assert len(errors) == 2 and all("shape" in e["error"] for e in errors)
    assert all(list(e) == ["frame", "ts", "error", "dropped"] for e in errors)  # the error event's schema, in order
    assert len(events) - len(errors) == 10
    assert events[-1]["label"] == "N"  # the camera that came back is the one being classified
    text = summary.summary()
    assert "stalls 1" in text and "reconnects 2" in text and "bad frames skipped 2" in text


def test_live_loop_reports_drops_per_event(clf, tmp_path):
    events_path = tmp_path / "e.jsonl"

    class SlowClassifier:
        """The real classifier, slowed down so the camera outpaces it."""

        def __getattr__(self, name):
            return getattr(clf, name)

        def predict_proba(self, frame, order):
            threading.Event().wait(0.02)
            return clf.predict_proba(frame, order)

    with open_source(0, capture_factory=lambda: FakeCapture(delay=0.002)) as src:
        summary = run_camera(SlowClassifier(), src, CameraConfig(output=OutputOptions(show=False, jsonl=events_path), max_frames=6))
    events = read_jsonl(events_path)
    reported = sum(e["dropped"] for e in events)
    assert reported > 0 and summary.dropped >= reported
    for a, b in zip(events, events[1:]):
        assert b["dropped"] == b["frame"] - a["frame"] - 1


def test_threshold_reports_uncertain(clf, tmp_path):
    grey = np.full((48, 64, 3), 128, np.uint8)  # the tiny model gives 50 / 50 on grey
    save_image(tmp_path / "imgs" / "grey.png", grey)
    save_image(tmp_path / "imgs" / "warm.png", synthetic_rgb("B", 1))
    events_path = tmp_path / "e.jsonl"
    with open_source(tmp_path / "imgs") as src:
        summary = run_camera(clf, src, CameraConfig(output=OutputOptions(show=False, jsonl=events_path), decision=DecisionOptions(threshold=0.8)))
    events = read_jsonl(events_path)
    assert [e["label"] for e in events] == [UNCERTAIN, "B"]  # grey.png < warm.png
    assert events[0]["confidence"] == pytest.approx(0.5, abs=1e-3)
    assert events[0]["path"].endswith("grey.png")
    assert list(events[0]) == ["frame", "ts", "label", "confidence", "probabilities", "latency_ms", "dropped", "path"]
    assert summary.labels == {UNCERTAIN: 1, "B": 1}


def test_rgb_image_source_is_classified_correctly_by_a_bgr_model(clf, tmp_path):
    for i, label in enumerate("BNB"):
        save_image(tmp_path / f"{i}.png", synthetic_rgb(label, i))
    events_path = tmp_path / "e.jsonl"
    with open_source(str(tmp_path / "*.png")) as src:
        run_camera(clf, src, CameraConfig(output=OutputOptions(show=False, jsonl=events_path)))
    assert [e["label"] for e in read_jsonl(events_path)] == ["B", "N", "B"]


@pytest.mark.parametrize("mode", ["majority", "ema"])
def test_smoothing_in_the_loop_stops_flicker(clf, tmp_path, mode):
    pattern = "BBBBNBBBNBBBNNNNBNNNNBNN"  # B with outliers, then N with outliers
    path = tmp_path / "flicker.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (64, 48))
    for i, label in enumerate(pattern):
        writer.write(np.ascontiguousarray(synthetic_rgb(label, i)[..., ::-1]))
    writer.release()
    events_path = tmp_path / "e.jsonl"
    with open_source(path) as src:
        run_camera(clf, src, CameraConfig(output=OutputOptions(show=False, jsonl=events_path), decision=DecisionOptions(smooth=5, smooth_mode=mode)))
    events = read_jsonl(events_path)
    raw = "".join(max(e["probabilities"], key=e["probabilities"].get) for e in events)
    shown = "".join(e["label"] for e in events)
    assert raw == pattern
    assert shown.startswith("BBBBBBBBBBBB") and shown.endswith("NNNNNNNNNN")
    assert sum(a != b for a, b in zip(shown, shown[1:])) == 1  # one change of label, no flicker


def test_save_writes_annotated_video(clf, video, tmp_path):
    out = tmp_path / "annotated.avi"
    with open_source(video) as src:
        summary = run_camera(clf, src, CameraConfig(output=OutputOptions(show=False, save=out), max_frames=5))
    assert summary.frames == 5
    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    ok, annotated = cap.read()
    cap.release()
    raw = cv2.VideoCapture(str(video)).read()[1]
    assert ok and annotated.shape == raw.shape
    banner = np.abs(annotated[:10, :30].astype(int) - raw[:10, :30].astype(int)).mean()
    rest = np.abs(annotated[-10:, -10:].astype(int) - raw[-10:, -10:].astype(int)).mean()
    assert banner > 30 > rest  # the overlay is drawn in the corner, the rest of the picture is untouched


def test_ctrl_c_stops_cleanly_with_a_summary(clf, tmp_path):
    class InterruptedSource(FrameSource):
        name, kind, live, channel_order, fps, frame_count = "fake", "custom", True, "BGR", None, None

        def __init__(self):
            self.n = 0

        def read(self):
            self.n += 1
            if self.n == 4:
                raise KeyboardInterrupt
            return synthetic_rgb("B", self.n)[..., ::-1].copy(), FrameInfo(self.n - 1, 0.0)

        def stats(self):
            return SourceStats(self.n, 0, 0, 0, 0, 0)

        def close(self):
            pass

    events_path = tmp_path / "e.jsonl"
    summary = run_camera(clf, InterruptedSource(), CameraConfig(output=OutputOptions(show=False, jsonl=events_path)))
    assert summary.stop_reason == "interrupted" and summary.frames == 3
    assert len(read_jsonl(events_path)) == 3  # the sink was flushed and closed


def test_show_without_display_falls_back_to_headless(clf, video, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with open_source(video) as src:
        summary = run_camera(clf, src, CameraConfig(output=OutputOptions(show=True), max_frames=3))
    assert summary.frames == 3


def test_stop_event_ends_the_loop(clf):
    stop = threading.Event()
    stop.set()
    with open_source(0, capture_factory=lambda: FakeCapture()) as src:
        summary = run_camera(clf, src, CameraConfig(output=OutputOptions(show=False)), stop=stop)
    assert summary.stop_reason == "stopped" and summary.frames == 0


# -- CLI ---------------------------------------------------------------------------------------------------------


def test_camera_cli_headless_jsonl_to_stdout(model, video, capsys):
    rc = main(["camera", "--device", str(video), "--model", str(model), "--no-show", "--max-frames", "5", "--jsonl", "-", "--threads", "1"])
    out, err = capsys.readouterr()
    assert rc == 0
    events = [json.loads(line) for line in out.splitlines()]  # stdout is pure JSONL
    assert len(events) == 5 and events[0]["label"] == "B"
    assert "5 frames" in err and "p50 / p90 / p99" in err and "max frames" in err


def test_camera_cli_jsonl_file_and_save(model, video, tmp_path, capsys):
    events_path, out_video = tmp_path / "e.jsonl", tmp_path / "out.mp4"
    rc = main(["camera", "--device", str(video), "--model", str(model), "--no-show", "--jsonl", str(events_path), "--save", str(out_video), "--smooth", "3", "--threshold", "0.6"])
    out, _ = capsys.readouterr()
    assert rc == 0
    assert len(read_jsonl(events_path)) == len(PATTERN) * 2
    assert out_video.stat().st_size > 0
    assert "end of source" in out and "dropped 0" in out


def test_camera_cli_without_model_uses_the_embedded_default(video, capsys):
    rc = main(["camera", "--device", str(video), "--no-show", "--max-frames", "3"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "default.onnx: effnet-lite0 int8" in out and "3 frames" in out


def test_camera_cli_bad_device_is_a_clear_error(model, tmp_path, capsys):
    rc = main(["camera", "--device", str(tmp_path / "nope.mp4"), "--model", str(model), "--no-show"])
    _, err = capsys.readouterr()
    assert rc == 1 and "no such file" in err and "Traceback" not in err


def test_camera_help_teaches(capsys):
    with pytest.raises(SystemExit):
        main(["camera", "--help"])
    out, _ = capsys.readouterr()
    for flag in ("--device", "--model", "--backend", "--no-show", "--save", "--jsonl", "--smooth", "--threshold", "--max-frames", "example:"):
        assert flag in out


def test_camera_cli_on_decision_runs_the_newest_decision_and_counts_the_rest(model, video, tmp_path, capsys):
    import shlex
    import sys

    from tests.runtime.test_hooks import SCRIPT

    rec = tmp_path / "rec.jsonl"
    cmd = shlex.join([sys.executable, str(SCRIPT), "record", str(rec)])
    rc = main(["camera", "--device", str(video), "--model", str(model), "--no-show", "--on-decision", cmd])
    out, err = capsys.readouterr()
    assert rc == 0, err
    runs = read_jsonl(rec)
    changes = 9  # PATTERN twice: B N B N B | N B N B
    line = next(l for l in out.splitlines() if l.startswith("on-decision:"))
    assert line.startswith(f"on-decision: {changes} decision changes: {len(runs)} ok, 0 failed, 0 timed out, 0 could not start, "
                           f"{changes - len(runs)} skipped for a newer one, 0 left at exit"), line
    for r in runs:  # changes alternate B, N, B, ...: odd seq is B; the first one has no previous label
        seq, env = json.loads(r["stdin"])["seq"], r["env"]
        assert env["WASTE_EDGE_LABEL"] == ("B" if seq % 2 else "N") and env["WASTE_EDGE_CAMERA"] == "cam0"
        assert env["WASTE_EDGE_PREVIOUS"] == ("" if seq == 1 else "N" if seq % 2 else "B")
    assert json.loads(runs[-1]["stdin"])["seq"] == changes and runs[-1]["env"]["WASTE_EDGE_LABEL"] == "B", "the last decision always runs"
    assert all(len(json.loads(r["stdin"])["model"]) == 64 for r in runs)
