"""MQTT events for the sorting machine, home or factory automation (paho-mqtt, QoS 1).

Topic layout under the prefix given in the URL (`mqtt://HOST:PORT/PREFIX`, default prefix `waste-edge`):

  PREFIX/status              "online" / "offline", retained; "offline" is also the last will, so a crash
                             or a lost network reads "offline" too
  PREFIX/CAMERA/decision     one JSON message per decision change (schema "waste-edge.decision/1"), retained
                             so a consumer that subscribes later learns the current decision at once
  PREFIX/CAMERA/summary      every `summary_interval` seconds (schema "waste-edge.summary/1"), retained

Every JSON message carries `seq`, one counter over all messages of this process: a consumer sees a gap
exactly where a message was lost. While the broker is away, messages wait in a bounded in-memory queue
(`queue_size`); when it is full the OLDEST waiting message is dropped and counted (`dropped`), so after
a long outage a consumer gets the latest `queue_size` messages, not stale ones. Messages already handed
to paho are kept by paho and re-sent after a reconnect (QoS 1: at least once). paho reconnects with
exponential back-off (1 s doubling to 30 s). Home Assistant discovery (`ha_discovery.py`) describes these
topics to HA; it hooks into every (re)connect with `add_connect_listener`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.decision_event import DECISION_SCHEMA, DecisionEvent
from waste_edge.runtime.pipeline import Sink
from waste_edge.serve.snapshots import CameraSnapshot, MqttStatus

log = logging.getLogger(__name__)

__all__ = ["DECISION_SCHEMA", "SUMMARY_SCHEMA", "MqttDecisions", "MqttPublisher", "MqttStatus", "MqttTarget", "parse_mqtt_url",
           "summary_message"]

SUMMARY_SCHEMA = "waste-edge.summary/1"
ONLINE, OFFLINE = "online", "offline"
MAX_INFLIGHT = 32  # messages handed to paho and not yet acknowledged


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    prefix: str
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @property
    def redacted(self) -> str:
        user = f"{self.username}:***@" if self.password else (f"{self.username}@" if self.username else "")
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}/{self.prefix}"


def parse_mqtt_url(url: str) -> MqttTarget:
    """mqtt://[user[:password]@]host[:port][/prefix] (mqtts:// for TLS; ports 1883 / 8883 by default)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise WasteEdgeError(f"{url}: MQTT URL must start with mqtt:// or mqtts://")
    if not parts.hostname:
        raise WasteEdgeError(f"{url}: MQTT URL has no host (mqtt://HOST:PORT/TOPIC)")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise WasteEdgeError(f"{url}: bad port") from None
    prefix = parts.path.strip("/") or "waste-edge"
    if "#" in url or "+" in prefix or parts.query:
        raise WasteEdgeError(f"{url}: the topic prefix may not contain MQTT wildcards (# or +)")
    return MqttTarget(parts.hostname, port, prefix, unquote(parts.username) if parts.username else None,
                      unquote(parts.password) if parts.password else None, tls)


def summary_message(camera: CameraSnapshot, model_sha256: str) -> dict[str, Any]:
    """The `waste-edge.summary/1` document of one camera (the publisher adds `seq` and `ts` in front)."""
    return {
        "schema": SUMMARY_SCHEMA, "camera": camera.id, "state": camera.state, "decision": camera.decision.label if camera.decision else None,
        "fps": camera.fps, "frames": camera.counters.frames, "last_hour": dict(camera.last_hour),
        "latency_ms": camera.latency_ms().get("total", {}), "dropped": camera.counters.dropped, "reconnects": camera.counters.reconnects,
        "model": model_sha256,
    }


class MqttPublisher:
    def __init__(self, target: MqttTarget, *, queue_size: int = 1000, keepalive: int = 30, backoff: tuple[int, int] = (1, 30)) -> None:
        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self.target = target
        self.queue_size = max(1, int(queue_size))
        self._queue: deque[tuple[str, bytes, bool]] = deque()
        self._cond = threading.Condition()
        self._connected = False
        self._stopping = False
        self._seq = 0
        self.sent = 0  # acknowledged by the broker
        self.dropped = 0  # dropped from the full queue (oldest first)
        self.connects = 0
        self.last_error = ""
        self._inflight: deque[Any] = deque()
        self._connect_listeners: list[Callable[[Any], None]] = []
        client_id = f"waste-edge-{socket.gethostname()}-{os.getpid()}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=True)
        if target.username:
            self.client.username_pw_set(target.username, target.password)
        if target.tls:
            self.client.tls_set()
        self.client.will_set(self.topic("status"), OFFLINE, qos=1, retain=True)
        self.client.reconnect_delay_set(*backoff)
        self.client.max_inflight_messages_set(MAX_INFLIGHT)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.keepalive = keepalive
        self._sender = threading.Thread(target=self._send_loop, name="waste-edge mqtt", daemon=True)

    def add_connect_listener(self, listener: Callable[[Any], None]) -> None:
        """Call `listener(client)` on paho's thread after every (re)connect, once "online" is queued (HA discovery)."""
        self._connect_listeners.append(listener)

    def topic(self, *parts: str) -> str:
        return "/".join([self.target.prefix, *parts])

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.client.connect_async(self.target.host, self.target.port, self.keepalive)
        self.client.loop_start()  # paho's thread: connects, reconnects with back-off, re-sends unacknowledged messages
        self._sender.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued (up to `timeout` while connected), publish "offline", disconnect."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._queue or self._unacked()) and self._connected and time.monotonic() < deadline:
                self._cond.wait(0.05)
            self._stopping = True
            self._cond.notify_all()
        self._sender.join(timeout=2.0)
        if self._connected:
            info = self.client.publish(self.topic("status"), OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(max(0.5, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as e:
                log.warning("mqtt: could not publish offline: %s", e)
        with self._cond:
            lost = len(self._queue) + self._unacked()
        if lost:
            log.warning("mqtt: %d messages not delivered at exit (broker away)", lost)
        self.client.disconnect()
        self.client.loop_stop()

    # -- publishing ------------------------------------------------------------------------------------------

    def publish(self, subtopic: str, doc: dict[str, Any], *, retain: bool = True) -> int:
        """Queue one JSON message (adds `seq` and `ts`); returns its seq. Never blocks the caller."""
        with self._cond:
            self._seq += 1
            seq = self._seq
            payload = json.dumps({"seq": seq, "ts": round(time.time(), 3), **doc}, separators=(",", ":")).encode()
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append((self.topic(subtopic), payload, retain))
            self._cond.notify_all()
        return seq

    def _unacked(self) -> int:
        while self._inflight and self._inflight[0].is_published():
            self._inflight.popleft()
            self.sent += 1
        return len(self._inflight)

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not (self._connected and self._queue and self._unacked() < MAX_INFLIGHT):
                    self._cond.wait(0.05)
                if self._stopping:
                    return
                topic, payload, retain = self._queue.popleft()
                info = self.client.publish(topic, payload, qos=1, retain=retain)
                if info.rc == self._mqtt.MQTT_ERR_QUEUE_SIZE:  # cannot happen with paho's queue unbounded; count it anyway
                    self.dropped += 1
                else:
                    self._inflight.append(info)

    # -- paho callbacks (paho's thread) ----------------------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            self.last_error = f"connection refused: {reason}"
            log.warning("mqtt: %s: %s", self.target.redacted, self.last_error)
            return
        client.publish(self.topic("status"), ONLINE, qos=1, retain=True)
        with self._cond:
            self._connected = True
            self.connects += 1
            self.last_error = ""
            self._cond.notify_all()
        log.info("mqtt: connected to %s", self.target.redacted)
        for listener in self._connect_listeners:
            try:
                listener(client)
            except Exception:  # a listener must not break paho's network thread
                log.exception("mqtt: connect listener failed")

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any = None) -> None:
        with self._cond:
            was = self._connected
            self._connected = False
            if not self._stopping:
                self.last_error = f"disconnected: {reason}"
        if was and not self._stopping:
            log.warning("mqtt: lost %s (%s); reconnecting with back-off, queueing up to %d messages", self.target.redacted, reason, self.queue_size)

    def status(self) -> MqttStatus:
        with self._cond:
            return MqttStatus(self.target.redacted, self.target.prefix, self._connected, len(self._queue), self.queue_size, self._unacked(),
                              self.sent, self.dropped, self.connects, self.last_error)


class MqttDecisions(Sink):
    """Publishes each decision change of a camera to PREFIX/CAMERA/decision (`waste-edge.decision/1`, retained)."""

    name = "mqtt"

    def __init__(self, publisher: MqttPublisher) -> None:
        self.publisher = publisher

    def on_decision(self, event: DecisionEvent) -> None:
        self.publisher.publish(f"{event.camera}/decision", event.fields())
