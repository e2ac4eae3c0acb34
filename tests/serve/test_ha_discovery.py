"""Home Assistant MQTT discovery against a real mosquitto on loopback: retained config topics in HA's documented
format, valid JSON with the keys HA needs, value templates that render the service's real state messages
(rendered with jinja2, HA's template engine), unique_ids stable across restarts, and a camera dropped between
two runs removed cleanly (empty retained config, its retained state cleared too)."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest

from tests.runtime.tiny_model import make_fused_model
from tests.serve.conftest import ServeProcess, alternating_video, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("serve_extra")]
PREFIX = "test/bin.7"  # a dot: the node id must be made topic-safe
TOPIC = re.compile(r"^homeassistant/sensor/(?P<node>[A-Za-z0-9_-]+)/(?P<obj>[A-Za-z0-9_-]+)/config$")
KEYS = ("decision", "confidence", "count_B", "count_N", "count_uncertain", "fps")


class Retained:
    """Connects, subscribes to `topic`, and collects what the broker hands a NEW subscriber: the retained messages."""

    def __init__(self, port: int, topic: str, settle: float = 1.0) -> None:
        import paho.mqtt.client as mqtt

        self.messages: dict[str, tuple[bytes, bool]] = {}
        done = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, clean_session=True)
        client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
        client.on_subscribe = lambda *a: done.set()
        client.on_message = lambda c, u, m: self.messages.__setitem__(m.topic, (bytes(m.payload), bool(m.retain)))
        client.connect("127.0.0.1", port)
        client.loop_start()
        assert done.wait(20)
        time.sleep(settle)
        client.disconnect()
        client.loop_stop()

    def configs(self) -> dict[str, dict]:
        return {t: json.loads(p) for t, (p, retained) in self.messages.items() if retained and TOPIC.match(t)}


def serve(tmp_path, port: int, devices: list[str], name: str) -> ServeProcess:
    return ServeProcess(["--model", str(tmp_path / "tiny.onnx"), *[a for d in devices for a in ("--device", d)], "--loop", "--realtime",
                         "--mqtt", f"mqtt://127.0.0.1:{port}/{PREFIX}", "--mqtt-summary", "1", "--mqtt-discovery"],
                        tmp_path / name)


def test_discovery_configs_retained_valid_stable_and_removed(mosquitto, tmp_path):
    jinja2 = pytest.importorskip("jinja2")
    make_fused_model(tmp_path / "tiny.onnx", channel_order="BGR")
    video = alternating_video(tmp_path / "alt.mp4", n=60, every=5, fps=15)
    first = serve(tmp_path, mosquitto.port, [f"door={video}", f"belt={video}"], "run1")
    try:
        assert "mqtt discovery: homeassistant/sensor/" in first.output and "(12 entities" in first.output
        wait_for(lambda: len(Retained(mosquitto.port, "homeassistant/#", 0.5).configs()) == 12, 60, "12 retained discovery configs")
        wait_for(lambda: all(f"test/bin.7/{c}/summary" in Retained(mosquitto.port, "test/bin.7/#", 0.5).messages for c in ("door", "belt")),
                 60, "retained summaries of both cameras")
        state = Retained(mosquitto.port, "test/bin.7/#").messages
    finally:
        assert first.terminate() == 0, first.output
    configs = Retained(mosquitto.port, "homeassistant/#").configs()
    nodes = {TOPIC.match(t)["node"] for t in configs}
    assert len(nodes) == 1 and next(iter(nodes)).startswith("test_bin_7_"), nodes
    node = nodes.pop()
    assert {TOPIC.match(t)["obj"] for t in configs} == {f"{c}_{k}" for c in ("door", "belt") for k in KEYS}
    env = jinja2.Environment()
    for topic, doc in configs.items():
        obj = TOPIC.match(topic)["obj"]
        assert doc["unique_id"] == f"{node}_{obj}", "unique_id: the node id and the object id, nothing that changes per run"
        assert doc["device"]["identifiers"] == [node] and doc["device"]["name"] == "waste-edge test/bin.7"
        assert doc["origin"]["name"] == "waste-edge" and doc["origin"]["sw_version"]
        assert doc["availability"] == [{"topic": "test/bin.7/status", "payload_available": "online", "payload_not_available": "offline"}]
        assert doc["name"] and doc["state_topic"] in state and doc["value_template"].startswith("{{")
        value = env.from_string(doc["value_template"]).render(value_json=json.loads(state[doc["state_topic"]][0]))
        if obj.endswith("_decision"):
            assert doc["device_class"] == "enum" and doc["options"] == ["B", "N", "uncertain"] and value in doc["options"]
            attrs = json.loads(env.from_string(doc["json_attributes_template"]).render(value_json=json.loads(state[doc["json_attributes_topic"]][0])))
            assert set(attrs) == {"display_name", "previous"}
        else:
            assert doc["state_class"] == "measurement" and float(value) >= 0, (obj, value)
            if obj.endswith("_confidence"):
                assert doc["unit_of_measurement"] == "%" and 0 <= float(value) <= 100
    offline = Retained(mosquitto.port, "test/bin.7/status").messages["test/bin.7/status"]
    assert offline == (b"offline", True), "availability: offline after SIGTERM"

    # Run 2: the belt camera is gone. Its configs get an empty retained message, its retained state is cleared,
    # the door's unique_ids are the same as before.
    second = serve(tmp_path, mosquitto.port, [f"door={video}"], "run2")
    try:
        wait_for(lambda: len(Retained(mosquitto.port, "homeassistant/#", 0.5).configs()) == 6, 60, "the belt's configs removed")
        after = Retained(mosquitto.port, "homeassistant/#").configs()
        assert {t: d["unique_id"] for t, d in after.items()} == {t: d["unique_id"] for t, d in configs.items() if "/door_" in t}
        kept = Retained(mosquitto.port, "test/bin.7/#").messages
        assert not any(t.startswith("test/bin.7/belt/") for t in kept), "the dropped camera's retained state is cleared"
        assert "test/bin.7/door/summary" in kept and kept["test/bin.7/status"] == (b"online", True)
        status = __import__("httpx").get(second.url + "/api/v1/status", timeout=30).json()["mqtt_discovery"]
        assert status["entities"] == 6 and status["removed"] == 6 and status["syncs"] >= 1 and status["last_error"] == ""
    finally:
        assert second.terminate() == 0, second.output
