"""A real broker (Debian's mosquitto, started here on a free loopback port) receives the decision messages
with the documented schema; a broker outage loses no more than the queue bound says; SIGTERM publishes
"offline"."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.runtime.tiny_model import make_fused_model
from tests.serve.conftest import ServeProcess, alternating_video, wait_for

PREFIX = "test/bin7"
QUEUE = 5
DECISION_KEYS = {"schema", "seq", "ts", "camera", "label", "display_name", "confidence", "probabilities", "previous", "frame", "model"}
SUMMARY_KEYS = {"schema", "seq", "ts", "camera", "state", "decision", "fps", "frames", "last_hour", "latency_ms", "dropped", "reconnects", "model"}


class Subscriber:
    """A durable (clean_session=False) QoS-1 subscriber: the broker keeps its messages across the outage."""

    def __init__(self, port: int, topic: str, client_id: str = "waste-edge-test-sub", clean: bool = False) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        self.client.reconnect_delay_set(1, 2)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p=None: (c.subscribe(topic, qos=1), None)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(20), "subscription not acknowledged"

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, msg.retain))

    def docs(self) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if not t.endswith("/status")]

    def statuses(self) -> list[str]:
        with self.lock:
            return [p.decode() for t, p, _ in self.messages if t.endswith("/status")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.slow
def test_mqtt_schema_outage_bound_and_offline(mosquitto, tmp_path, serve_extra):
    import httpx

    model = make_fused_model(tmp_path / "tiny.onnx", channel_order="BGR")
    video = alternating_video(tmp_path / "alt.mp4", n=60, every=5, fps=15)
    sub = Subscriber(mosquitto.port, f"{PREFIX}/#")
    server = ServeProcess(["--model", str(model), "--device", str(video), "--loop", "--realtime", "--jsonl", str(tmp_path / "ev.jsonl"),
                           "--mqtt", f"mqtt://127.0.0.1:{mosquitto.port}/{PREFIX}", "--mqtt-queue", str(QUEUE), "--mqtt-summary", "1"], tmp_path)
    try:
        status = lambda: httpx.get(server.url + "/api/v1/status", timeout=30).json()  # noqa: E731
        wait_for(lambda: len([d for d in sub.docs() if d["schema"] == "waste-edge.decision/1"]) >= 4, 60, "4 decision messages")
        assert "online" in sub.statuses()
        decisions = [d for d in sub.docs() if d["schema"] == "waste-edge.decision/1"]
        for d in decisions:
            assert set(d) == DECISION_KEYS, d
            assert d["camera"] == "cam0" and d["label"] in ("B", "N", "uncertain") and set(d["probabilities"]) == {"B", "N"}
            assert 0.0 <= d["confidence"] <= 1.0 and isinstance(d["frame"], int) and len(d["model"]) == 64
        assert all(a["label"] != b["label"] for a, b in zip(decisions, decisions[1:])), "one message per decision CHANGE"
        assert all(b["previous"] == a["label"] for a, b in zip(decisions, decisions[1:]))
        wait_for(lambda: [d for d in sub.docs() if d["schema"] == "waste-edge.summary/1"], 30, "a summary message")
        summaries = [d for d in sub.docs() if d["schema"] == "waste-edge.summary/1"]
        assert set(summaries[0]) == SUMMARY_KEYS and set(summaries[0]["last_hour"]) == {"B", "N", "uncertain"}

        # Outage: the broker goes away long enough for more than QUEUE messages to pile up, then comes back.
        last_before = max(d["seq"] for d in sub.docs())
        mosquitto.stop()
        wait_for(lambda: not status()["mqtt"]["connected"], 30, "serve to notice the broker is gone")
        wait_for(lambda: status()["mqtt"]["dropped"] >= 3, 60, "the queue to overflow")
        mosquitto.start()
        wait_for(lambda: status()["mqtt"]["connected"] and status()["mqtt"]["queued"] == 0, 60, "serve to reconnect and drain its queue")
        mq = status()["mqtt"]
        dropped = mq["dropped"]
        top = max(d["seq"] for d in sub.docs()) if sub.docs() else 0
        wait_for(lambda: max(d["seq"] for d in sub.docs()) > top + 2, 60, "messages after the outage")

        assert server.terminate() == 0, server.output
        wait_for(lambda: sub.statuses()[-1:] == ["offline"], 30, "offline on the status topic")
        seqs = {d["seq"] for d in sub.docs()}
        missing = set(range(1, max(seqs) + 1)) - seqs
        # Lost exactly what the bounded queue dropped (counted), nothing else: the durable subscriber got all the rest.
        assert len(missing) == dropped, f"missing {sorted(missing)}, dropped {dropped}, {mq}"
        assert all(s > last_before for s in missing)
        # Drop-oldest: the lost ones are one run, and the QUEUE messages after it (the newest of the outage) arrived.
        assert missing == set(range(min(missing), max(missing) + 1)), sorted(missing)
        assert all(s in seqs for s in range(max(missing) + 1, max(missing) + 1 + QUEUE))
    finally:
        sub.close()
        if server.proc.poll() is None:
            server.terminate()

    late = Subscriber(mosquitto.port, f"{PREFIX}/status", client_id="waste-edge-test-late", clean=True)
    try:
        wait_for(lambda: late.messages, 10, "the retained status")
        assert late.messages[0][1] == b"offline" and late.messages[0][2] is True  # retained
    finally:
        late.close()
