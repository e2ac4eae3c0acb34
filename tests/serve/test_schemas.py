"""The wire formats of `serve`, pinned key by key (issue 24: the frame pipeline refactor must not change them).

One real `serve` process on a short generated video (no --loop: the camera ends), with --jsonl, --mqtt to a
real mosquitto and the HTTP API: the JSONL frame events and stop record, /api/v1/status, the SSE events,
the MQTT decision and summary messages and the Prometheus metric names are compared with the lists below,
in order where the order is visible (JSON objects are written in insertion order).
"""

from __future__ import annotations

import json

import pytest

from tests.runtime.tiny_model import make_fused_model
from tests.serve.conftest import ServeProcess, alternating_video, read_sse, wait_for
from tests.serve.test_mqtt import Subscriber

pytestmark = pytest.mark.usefixtures("serve_extra")

FRAME_EVENT = ["camera", "frame", "ts", "label", "confidence", "probabilities", "latency_ms", "dropped"]
SERVE_LATENCY = ["read", "queue", "infer", "total"]
COUNTERS = ["frames", "skipped_bad_frames", "inference_errors", "decision_changes", "dropped", "read_failures", "stalls",
            "reconnects", "skipped_files"]
STOP_RECORD = ["camera", "event", "ts", "state", "frames", "counters", "labels"]
STATUS = ["version", "uptime_s", "model", "model_swaps", "classes", "cameras", "batching", "mqtt", "mqtt_discovery", "on_decision",
          "webhooks", "jsonl", "sinks", "events_subscribers", "classify", "collect", "healthy", "http", "models_folder"]
CAMERA = ["id", "source", "kind", "state", "error", "inference_failing", "decision", "fps", "latency_ms", "last_frame_age_s",
          "counters", "labels", "last_hour", "stream_viewers"]
DECISION_STATE = ["label", "display_name", "confidence", "probabilities", "frame", "ts", "since"]
BATCHING = ["mode", "batched", "max_batch", "wait_ms", "calls", "frames", "mean_batch", "calibration"]
MQTT_STATUS = ["broker", "prefix", "connected", "queued", "queue_size", "unacknowledged", "sent", "dropped", "connects", "last_error"]
SSE_DECISION = ["type", "camera", *DECISION_STATE]
SSE_STATS = ["cameras", "model", "healthy", "mqtt", "batching"]
MQTT_DECISION = ["seq", "ts", "schema", "camera", "label", "display_name", "confidence", "probabilities", "previous", "frame", "model"]
MQTT_SUMMARY = ["seq", "ts", "schema", "camera", "state", "decision", "fps", "frames", "last_hour", "latency_ms", "dropped",
                "reconnects", "model"]
METRICS = {  # family name: type, as the `# TYPE` lines of /metrics say
    "waste_edge_frames_total": "counter", "waste_edge_decisions_total": "counter", "waste_edge_decision_changes_total": "counter",
    "waste_edge_dropped_frames_total": "counter", "waste_edge_reconnects_total": "counter", "waste_edge_stalls_total": "counter",
    "waste_edge_read_failures_total": "counter", "waste_edge_bad_frames_total": "counter", "waste_edge_inference_errors_total": "counter",
    "waste_edge_camera_up": "gauge", "waste_edge_camera_fps": "gauge", "waste_edge_inference_calls_total": "counter",
    "waste_edge_model_info": "gauge", "waste_edge_mqtt_sent_total": "counter", "waste_edge_mqtt_dropped_total": "counter",
    "waste_edge_mqtt_queued": "gauge", "waste_edge_mqtt_connected": "gauge", "waste_edge_inference_seconds": "histogram",
    "waste_edge_classify_seconds": "histogram", "waste_edge_classify_requests_total": "counter",
}


def test_serve_wire_formats(mosquitto, tmp_path):
    import httpx

    model = make_fused_model(tmp_path / "tiny.onnx", channel_order="BGR")
    video = alternating_video(tmp_path / "alt.mp4", n=300, every=5, fps=30)
    events = tmp_path / "ev.jsonl"
    sub = Subscriber(mosquitto.port, "schema/#", client_id="waste-edge-schema-sub", clean=True)
    server = ServeProcess(["--model", str(model), "--device", f"door={video}", "--realtime", "--jsonl", str(events),
                           "--mqtt", f"mqtt://127.0.0.1:{mosquitto.port}/schema", "--mqtt-summary", "1"], tmp_path)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            wait_for(lambda: c.get("/api/v1/status").json()["cameras"][0]["decision"], 60, "a decision")
            status = c.get("/api/v1/status").json()
            assert list(status) == STATUS
            cam = status["cameras"][0]
            assert list(cam) == CAMERA and list(cam["counters"]) == COUNTERS and list(cam["decision"]) == DECISION_STATE
            assert set(cam["latency_ms"]) == set(SERVE_LATENCY) and all(list(v) == ["p50", "p90", "p99"] for v in cam["latency_ms"].values())
            assert list(cam["labels"]) == ["B", "N", "uncertain"] == list(cam["last_hour"])
            assert list(status["batching"]) == BATCHING and list(status["mqtt"]) == MQTT_STATUS
            assert list(status["classify"]) == ["pending", "workers", "max_body_bytes", "max_pixels"]
            assert status["collect"] is None and status["jsonl"] == str(events)
            sse = read_sse(c)
            assert list(sse["decision"][0]) == SSE_DECISION and sse["decision"][0]["camera"] == "door"
            assert list(sse["stats"][-1]) == SSE_STATS and list(sse["stats"][-1]["model"]) == ["sha256", "name"]
            assert list(sse["stats"][-1]["cameras"][0]) == CAMERA
            types = dict(line.split()[2:4] for line in c.get("/metrics").text.splitlines() if line.startswith("# TYPE "))
            assert {k: v for k, v in types.items() if k in METRICS} == METRICS, types
            wait_for(lambda: [d for d in sub.docs() if d["schema"] == "waste-edge.summary/1"], 30, "a summary message")
            wait_for(lambda: len([d for d in sub.docs() if d["schema"] == "waste-edge.decision/1"]) >= 2, 30, "two decisions")
        assert server.terminate() == 0, server.output
    finally:
        sub.close()
        if server.proc.poll() is None:
            server.terminate()
    decisions = [d for d in sub.docs() if d["schema"] == "waste-edge.decision/1"]
    assert all(list(d) == MQTT_DECISION for d in decisions), decisions[0]
    assert decisions[0]["previous"] is None and decisions[1]["previous"] == decisions[0]["label"]
    assert decisions[0]["camera"] == "door" and list(decisions[0]["probabilities"]) == ["B", "N"]
    summaries = [d for d in sub.docs() if d["schema"] == "waste-edge.summary/1"]
    assert all(list(s) == MQTT_SUMMARY for s in summaries), summaries[0]
    assert list(summaries[-1]["latency_ms"]) == ["p50", "p90", "p99"] and list(summaries[-1]["last_hour"]) == ["B", "N", "uncertain"]
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    frames, stop = lines[:-1], lines[-1]
    assert frames and all(list(e) == FRAME_EVENT and list(e["latency_ms"]) == SERVE_LATENCY for e in frames)
    assert list(stop) == STOP_RECORD and list(stop["counters"]) == COUNTERS and stop["event"] == "stop"
    assert stop["frames"] == len(frames) and list(stop["labels"]) == ["B", "N", "uncertain"]
