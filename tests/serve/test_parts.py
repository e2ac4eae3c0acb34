"""The service's parts in-process: rolling numbers, the model holder's swap, the batcher, a camera worker
on a misbehaving (fake) camera, MQTT URL and --device parsing, the non-loopback warning."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.runtime.fakes import FakeCapture, ScriptedCamera
from tests.runtime.tiny_model import make_fused_model
from tests.serve.conftest import wait_for
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.sources import SourceError, open_source
from waste_edge.runtime.stats import HourCounts, LatencyWindow, RateMeter

pytest.importorskip("prometheus_client", reason="the [serve] extra is not installed")


def test_hour_counts_forget_what_is_older_than_an_hour():
    c = HourCounts(["B", "N", "uncertain"])
    t = 1_000_000.0
    c.add("B", t)
    c.add("N", t + 30)
    c.add("B", t + 1800)
    assert c.totals(t + 1800) == {"B": 2, "N": 1, "uncertain": 0}
    assert c.totals(t + 3600 + 61) == {"B": 1, "N": 0, "uncertain": 0}
    c.add("uncertain", t + 7200)  # reuses a ring slot: the old minute's counts are cleared, not added to
    assert c.totals(t + 7200) == {"B": 0, "N": 0, "uncertain": 1}


def test_rate_and_latency_windows():
    r = RateMeter(window_s=5)
    for i in range(11):
        r.tick(100.0 + i * 0.1)
    assert r.rate(101.0) == pytest.approx(10.0)
    assert r.rate(200.0) == 0.0
    lat = LatencyWindow(("infer",), size=100)
    for v in range(1, 201):
        lat.add(infer=float(v))
    assert lat.percentiles()["infer"].p50 == pytest.approx(150.5)  # only the last 100 count
    everything = LatencyWindow(("total",), size=None)  # a `camera` run's summary: every frame counts
    for v in range(1, 201):
        everything.add(total=float(v))
    assert everything.percentiles()["total"].p50 == pytest.approx(100.5) and everything.percentiles()["total"].mean == pytest.approx(100.5)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    return {
        "bgr": make_fused_model(tmp / "bgr.onnx", channel_order="BGR"),
        "strong": make_fused_model(tmp / "strong.onnx", channel_order="BGR", scale=40.0),
        "three": make_fused_model(tmp / "three.onnx", channel_order="BGR", classes=("B", "N", "X")),
    }


def test_model_swap_is_atomic_and_waits_for_calls_in_flight(models):
    from waste_edge.serve.model_holder import ModelHolder, load_model

    holder = ModelHolder(load_model(models["bgr"], "cpu", 1), backend="cpu", threads=1)
    frame = np.zeros((8, 8, 3), np.uint8); frame[..., 2] = 200
    old_sha = holder.current.sha256
    with holder.use() as old:  # a call in flight keeps its model usable through the swap
        new = holder.swap(models["strong"])
        assert holder.current is new and new.sha256 != old_sha and holder.swaps == 1
        assert old.classifier.runner.is_active
        p_old = old.classifier.predict_proba(frame)[0]
    assert not old.classifier.runner.is_active  # closed once its last user returned
    with holder.use() as m:
        p_new = m.classifier.predict_proba(frame)[0]
    assert p_new[0] > p_old[0] > 0.5  # same answer, more confident: really the other model
    with pytest.raises(WasteEdgeError, match="classes"):
        holder.swap(models["three"])
    assert holder.current is new
    holder.close()


def test_batcher_puts_frames_of_several_cameras_in_one_call(models):
    from waste_edge.serve.batcher import InferenceBatcher
    from waste_edge.serve.model_holder import ModelHolder, load_model

    holder = ModelHolder(load_model(models["bgr"], "cpu", 1))
    for mode in ("on", "auto", "off"):
        b = InferenceBatcher(holder, mode=mode, max_batch=8, wait_ms=2000, expected=lambda: 3)
        b.start()
        frames = [np.full((16, 16, 3), v, np.uint8) for v in (10, 120, 240)]
        out: dict[int, object] = {}
        threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, b.infer(frames[i], "BGR"))) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        b.stop()
        with holder.use() as m:
            for i in range(3):
                np.testing.assert_allclose(out[i].probs, m.classifier.predict_proba(frames[i])[0], atol=1e-6)
        st = b.status()
        assert st.frames == 3
        if mode == "on":
            assert st.calls == 1 and {r.batch_size for r in out.values()} == {3}
        if mode == "auto":
            assert st.calibration["frames"] == 3 and st.calibration["chosen"] in ("batched", "concurrent")
        if mode == "off":
            assert st.calls == 3 and st.batched is False
    holder.close()


def test_camera_worker_reports_reconnecting_then_connected_then_stalled(models):
    from waste_edge.runtime.pipeline import Sink
    from waste_edge.runtime.sources import SourceOptions
    from waste_edge.serve.batcher import InferenceBatcher
    from waste_edge.serve.camera_worker import CameraWorker
    from waste_edge.serve.model_holder import ModelHolder, load_model

    holder = ModelHolder(load_model(models["bgr"], "cpu", 1))
    batcher = InferenceBatcher(holder, mode="on", wait_ms=0)
    batcher.start()
    fails = {"n": 2}
    freeze = threading.Event()
    camera = ScriptedCamera([FakeCapture(["frame"] * 30 + ["freeze"], unfreeze=freeze, delay=0.01)])

    def factory(spec):
        if fails["n"]:
            fails["n"] -= 1
            raise SourceError("cannot open fake camera")
        return open_source(spec, capture_factory=camera, stall_timeout=0.5, backoff=(5.0, 5.0))

    decisions = []

    class Decisions(Sink):
        def on_decision(self, change):
            decisions.append(change)

    w = CameraWorker("cam0", "fake", infer=batcher.infer, classes=["B", "N"], display_names=["b", "n"],
                     source=SourceOptions(stall_timeout=0.5), sinks=[Decisions()], open_backoff=(0.2, 0.2), source_factory=factory)
    w.start()
    try:
        wait_for(lambda: w.state == "reconnecting" and "cannot open" in w.error, 10, "reconnecting while opens fail")
        wait_for(lambda: w.snapshot().counters.frames >= 10, 30, "frames after the open succeeded")
        assert w.snapshot().state == "connected" and w.opens == 1 and w.error == ""
        assert decisions and decisions[0].label == "B" and decisions[0].previous is None
        assert decisions[0].fields()["schema"] == "waste-edge.decision/1"
        wait_for(lambda: w.state in ("stalled", "reconnecting"), 10, "the frozen camera to show")
    finally:
        freeze.set()
        w.request_stop()
        assert w.join(10)
        batcher.stop()
        holder.close()
    assert w.state == "stopped"


def test_mqtt_urls():
    from waste_edge.serve.mqtt import parse_mqtt_url

    t = parse_mqtt_url("mqtt://user:p%40ss@broker.local:1884/factory/bin3/")
    assert (t.host, t.port, t.prefix, t.username, t.password, t.tls) == ("broker.local", 1884, "factory/bin3", "user", "p@ss", False)
    assert "p@ss" not in t.redacted and "***" in t.redacted
    assert parse_mqtt_url("mqtts://b").port == 8883 and parse_mqtt_url("mqtt://b").prefix == "waste-edge"
    for bad in ("http://b/x", "mqtt:///x", "mqtt://b/a/#"):
        with pytest.raises(WasteEdgeError):
            parse_mqtt_url(bad)


def test_device_names_and_early_errors(tmp_path):
    from waste_edge.serve.service import camera_specs

    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    assert camera_specs(["0", f"door={video}", "rtsp://h/s?ch=1"]) == [("cam0", "0"), ("door", str(video)), ("cam2", "rtsp://h/s?ch=1")]
    with pytest.raises(WasteEdgeError, match="two cameras"):
        camera_specs([f"a={video}", f"a={video}"])
    with pytest.raises(WasteEdgeError, match="no such file"):
        camera_specs([str(tmp_path / "missing.mp4")])


def test_loopback_detection():
    from waste_edge.serve.server import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "", "::", "192.168.1.5", "bin.local"))
