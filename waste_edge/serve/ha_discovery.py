"""`--mqtt-discovery [PREFIX]`: Home Assistant MQTT discovery, so that HA shows the bins with no YAML.

Follows HA's documented single-component discovery (home-assistant.io/integrations/mqtt, "MQTT Discovery";
sensor options from /integrations/sensor.mqtt): one retained config message per entity on

  PREFIX/sensor/NODE_ID/CAMERA_KEY/config          (PREFIX: HA's discovery prefix, default "homeassistant")

NODE_ID is this service's MQTT topic prefix made topic-safe (`[A-Za-z0-9_-]`, plus a short hash when that
changed it), so it is stable across restarts and different for every service on the broker (two services
on one prefix would mix their topics anyway). Every entity carries `unique_id` NODE_ID_CAMERA_KEY (stable
across restarts: users can rename and re-area it in HA), the `device` (one per service, identifiers
[NODE_ID]), the `origin` (waste-edge and its version) and `availability` from the existing status topic
(MQTT_PREFIX/status: "online", or "offline" at exit and as the broker's last will). Entities per camera,
fed by the topics the service already publishes (retained, so HA shows values as soon as it subscribes):

  CAMERA_decision       enum sensor: the decided label (B, N, ..., uncertain); attributes display_name, previous
  CAMERA_confidence     % of the decision when it was made                              (decision topic)
  CAMERA_count_LABEL    frames decided LABEL in the last hour, one per class and uncertain (summary topic,
                        every --mqtt-summary seconds)
  CAMERA_fps            frames per second (diagnostic)                                   (summary topic)

Cameras that are gone: HA removes an entity when its config topic gets an empty retained message. At each
connect the service subscribes to PREFIX/+/NODE_ID/+/config, so the broker hands back every config this
service (this NODE_ID) ever left retained, then publishes a probe to a topic of its own; when the probe comes
back, every retained config has arrived before it (the broker delivers to one client in order). Configs
that are no longer current (a camera dropped or renamed, a class the model no longer has) get the empty
message, and so do the retained decision / summary topics they read, so no ghost entity or stale state
stays behind; then the current configs are published (unchanged ones are not re-sent). Running `serve`
with `--mqtt-discovery` and no `--device` therefore removes every entity of the service. If the broker
refuses the subscription (an ACL) the probe never returns: after SYNC_TIMEOUT_S the configs are published
without the clean-up and the status says why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import uuid
from typing import Any, Sequence

from waste_edge import __version__
from waste_edge.errors import WasteEdgeError
from waste_edge.serve.mqtt import OFFLINE, ONLINE, MqttPublisher
from waste_edge.serve.snapshots import DiscoveryStatus

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "homeassistant"
NEEDS_MQTT = "--mqtt-discovery needs --mqtt mqtt://HOST:PORT/PREFIX (the broker Home Assistant uses)"
SYNC_TIMEOUT_S = 5.0
_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def topic_id(text: str) -> str:
    """`text` in HA's id alphabet [A-Za-z0-9_-]; a short hash of the original is added when characters changed."""
    safe = _SAFE.sub("_", text)
    return safe if safe == text else f"{safe}_{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def check_discovery_prefix(prefix: str) -> str:
    p = prefix.strip("/")
    if not p or any(c in p for c in "#+") or "//" in p:
        raise WasteEdgeError(f"--mqtt-discovery {prefix!r}: expected a topic prefix such as homeassistant (no wildcards # or +)")
    return p


class HaDiscovery:
    """Publishes (at every connect of `mqtt`) the discovery configs of `cameras` and removes stale ones."""

    def __init__(self, mqtt: MqttPublisher, cameras: Sequence[str], labels: Sequence[str], display_names: dict[str, str],
                 prefix: str = DEFAULT_PREFIX) -> None:
        self.mqtt = mqtt
        self.prefix = check_discovery_prefix(prefix)
        self.node_id = topic_id(mqtt.target.prefix)
        self.cameras = list(cameras)
        self.labels = list(labels)
        self.display_names = display_names
        self.configs = self._configs()
        self._lock = threading.Lock()
        self._seen: dict[str, bytes] = {}
        self._generation = 0
        self._probe = ""
        self._n = {"published": 0, "removed": 0, "syncs": 0}
        self._last_sync: float | None = None
        self._last_error = ""
        client = mqtt.client
        self._filter = f"{self.prefix}/+/{self.node_id}/+/config"
        client.message_callback_add(self._filter, self._on_config)
        client.message_callback_add(mqtt.topic("_discovery_sync", "+"), self._on_probe)
        mqtt.add_connect_listener(self._on_connect)

    # -- the configs -----------------------------------------------------------------------------------------

    def _configs(self) -> dict[str, bytes]:
        """config topic -> retained payload, for every entity of every camera."""
        m = self.mqtt
        device = {"identifiers": [self.node_id], "name": f"waste-edge {m.target.prefix}", "manufacturer": "waste-edge",
                  "model": "waste-edge serve", "sw_version": __version__}
        common = {
            "availability": [{"topic": m.topic("status"), "payload_available": ONLINE, "payload_not_available": OFFLINE}],
            "device": device,
            "origin": {"name": "waste-edge", "sw_version": __version__},
        }
        out: dict[str, bytes] = {}
        for cam in self.cameras:
            decision, summary = m.topic(cam, "decision"), m.topic(cam, "summary")
            entities: dict[str, dict[str, Any]] = {
                "decision": {"name": f"{cam} decision", "state_topic": decision, "value_template": "{{ value_json.label }}",
                             "device_class": "enum", "options": self.labels, "icon": "mdi:recycle",
                             "json_attributes_topic": decision,
                             "json_attributes_template": "{{ {'display_name': value_json.display_name, 'previous': value_json.previous} | tojson }}"},
                "confidence": {"name": f"{cam} confidence", "state_topic": decision, "unit_of_measurement": "%",
                               "value_template": "{{ (value_json.confidence * 100) | round(1) }}", "state_class": "measurement",
                               "suggested_display_precision": 1, "icon": "mdi:gauge"},
            }
            for label in self.labels:
                entities[f"count_{topic_id(label)}"] = {
                    "name": f"{cam} {self.display_names.get(label, label)} last hour", "state_topic": summary,
                    "value_template": "{{ value_json.last_hour[%s] }}" % json.dumps(label), "unit_of_measurement": "frames",
                    "state_class": "measurement", "icon": "mdi:counter"}
            entities["fps"] = {"name": f"{cam} frames/s", "state_topic": summary, "value_template": "{{ value_json.fps }}",
                               "unit_of_measurement": "fps", "state_class": "measurement", "suggested_display_precision": 1,
                               "entity_category": "diagnostic", "icon": "mdi:speedometer"}
            for key, entity in entities.items():
                object_id = f"{cam}_{key}"
                doc = {**entity, "unique_id": f"{self.node_id}_{object_id}", **common}
                out[f"{self.prefix}/sensor/{self.node_id}/{object_id}/config"] = json.dumps(doc, separators=(",", ":")).encode()
        return out

    # -- the read-back at each connect (paho's thread) -------------------------------------------------------

    def _on_connect(self, client: Any) -> None:
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._seen = {}
            self._probe = self.mqtt.topic("_discovery_sync", uuid.uuid4().hex[:12])
            probe = self._probe
        client.subscribe([(self._filter, 1), (probe, 1)])
        client.publish(probe, b"sync", qos=1, retain=False)  # queued after the SUBSCRIBE: it comes back after the retained configs
        timer = threading.Timer(SYNC_TIMEOUT_S, self._sync_timed_out, args=(generation,))
        timer.daemon = True
        timer.start()

    def _on_config(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.retain and msg.payload:
            with self._lock:
                self._seen[msg.topic] = bytes(msg.payload)

    def _on_probe(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            if msg.topic != self._probe:
                return
            self._probe = ""
            generation = self._generation
        self._reconcile(client, generation, clean=True)

    def _sync_timed_out(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation or not self._probe:
                return
            self._probe = ""
            self._last_error = (f"the broker did not return the read-back of {self._filter} within {SYNC_TIMEOUT_S:g} s "
                                "(an ACL?): configs published, stale ones not removed")
        log.warning("mqtt discovery: %s", self._last_error)
        self._reconcile(self.mqtt.client, generation, clean=False)

    def _reconcile(self, client: Any, generation: int, *, clean: bool) -> None:
        with self._lock:
            if generation != self._generation:
                return
            seen = dict(self._seen) if clean else {}
        client.unsubscribe([self._filter, self.mqtt.topic("_discovery_sync", "+")])
        current_states = {t for payload in self.configs.values() for t in _state_topics(payload)}
        removed = 0
        for topic, payload in seen.items():
            if topic in self.configs:
                continue
            client.publish(topic, b"", qos=1, retain=True)  # HA removes the entity; the broker forgets the config
            for state in _state_topics(payload):
                if state.startswith(self.mqtt.target.prefix + "/") and state not in current_states:
                    client.publish(state, b"", qos=1, retain=True)  # and the dropped camera's retained state
            removed += 1
            log.info("mqtt discovery: removed %s (no longer served)", topic)
        published = 0
        for topic, payload in self.configs.items():
            if seen.get(topic) != payload:
                client.publish(topic, payload, qos=1, retain=True)
                published += 1
        with self._lock:
            self._n["published"] += published
            self._n["removed"] += removed
            self._n["syncs"] += 1
            self._last_sync = time.time()
            if clean:
                self._last_error = ""
        log.info("mqtt discovery: %d entities under %s/sensor/%s (%d config(s) sent, %d removed)",
                 len(self.configs), self.prefix, self.node_id, published, removed)

    def status(self) -> DiscoveryStatus:
        with self._lock:
            return DiscoveryStatus(self.prefix, self.node_id, len(self.configs), last_sync=self._last_sync, last_error=self._last_error, **self._n)


def _state_topics(payload: bytes) -> set[str]:
    try:
        doc = json.loads(payload)
    except ValueError:
        return set()
    if not isinstance(doc, dict):
        return set()
    return {v for k, v in doc.items() if k in ("state_topic", "json_attributes_topic") and isinstance(v, str)}
