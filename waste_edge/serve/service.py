"""The service object: one model, N cameras, the batcher, the sinks (JSONL, MQTT, SSE, actions) and their lifecycle.

The HTTP layer (`app.py`, `routes/`) only reads from it and hands it work; tests and `server.run_server`
start and stop it. `stop()` is the clean end a SIGTERM asks for: cameras stop (their sources closed, so a
read blocked on a dead camera returns), in-flight inferences finish, each camera's JSONL gets a final
`stop` record after its last frame event, videos are closed, `--on-decision` commands finish and webhooks
deliver what is queued (within `ActionOptions.flush_s`), MQTT sends what is queued and then "offline".
"""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from waste_edge import __version__
from waste_edge._outputs import check_apart
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.collect import CollectConfig, Collector
from waste_edge.runtime.decision import UNCERTAIN
from waste_edge.runtime.decision_event import DecisionEvent
from waste_edge.runtime.sinks import JsonlSink
from waste_edge.runtime.sources import SourceError, parse_spec
from waste_edge.serve.actions import ActionOptions, DecisionActions
from waste_edge.serve.batcher import InferenceBatcher
from waste_edge.serve.camera_worker import DOWN_STATES, CameraOptions, CameraWorker
from waste_edge.serve.events import EventBus
from waste_edge.serve.limits import HttpOptions
from waste_edge.serve.model_holder import LoadedModel, ModelHolder, load_model
from waste_edge.serve.ha_discovery import NEEDS_MQTT, HaDiscovery
from waste_edge.serve.mqtt import SUMMARY_SCHEMA, MqttPublisher, parse_mqtt_url

log = logging.getLogger(__name__)

CAMERA_ID = r"[A-Za-z][A-Za-z0-9_-]{0,31}"  # what a camera may be named (cam0, door, belt-2): safe in topics, URLs, file names
_NAMED = re.compile(rf"^({CAMERA_ID})=(.+)$")


@dataclass
class ServeConfig:
    devices: list[str] = field(default_factory=list)  # source specs, optionally NAME=SPEC
    model: str | Path | None = None
    backend: str = "auto"
    threads: int | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    mqtt: str | None = None
    mqtt_queue: int = 1000
    mqtt_summary_s: float = 60.0
    jsonl: str | Path | None = None
    save: Path | None = None
    camera: CameraOptions = field(default_factory=CameraOptions)
    batch: str = "auto"
    max_batch: int = 8
    batch_wait_ms: float = 2.0
    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    classify_workers: int = 2
    classify_queue: int = 128
    collect: CollectConfig | None = None  # --collect: save each camera's uncertain frames there (Review view, adapt)
    models_dir: Path | None = None  # --models-dir: what POST /api/v1/model may serve, where adapt writes (default COLLECT/models)
    http: HttpOptions = field(default_factory=HttpOptions)  # connection and body limits, allowed hosts and origins
    actions: ActionOptions = field(default_factory=ActionOptions)  # --on-decision, --webhook, --mqtt-discovery
    # `waste_edge.adapt.adapter.adapt`, handed in by the CLI: serve may import only the runtime (DESIGN.md).
    adapter: Callable[..., Any] | None = None


def camera_specs(devices: list[str]) -> list[tuple[str, str]]:
    """(camera id, source spec) per --device; `NAME=SPEC` names a camera, else cam0, cam1, ..."""
    out: list[tuple[str, str]] = []
    for i, dev in enumerate(devices):
        m = _NAMED.match(dev)
        cam_id, spec = (m.group(1), m.group(2)) if m and "://" not in dev.split("=", 1)[0] else (f"cam{i}", dev)
        if any(c == cam_id for c, _ in out):
            raise WasteEdgeError(f"two cameras are named {cam_id!r}; name them NAME=SOURCE")
        try:
            parse_spec(spec)  # a missing file or folder is a typo: say so now, not in a log later
        except SourceError as e:
            raise WasteEdgeError(f"--device {dev}: {e}") from None
        out.append((cam_id, spec))
    return out


class Service:
    def __init__(self, config: ServeConfig, model: LoadedModel | None = None) -> None:
        self.config = config
        specs = camera_specs(config.devices)
        if config.collect is not None:  # a looping folder source must never read back its own collected frames
            check_apart(config.collect.folder, [spec for _, spec in specs], option="--collect")
        self.holder = ModelHolder(model or load_model(config.model, config.backend, config.threads), backend=config.backend, threads=config.threads)
        clf = self.holder.current.classifier
        self.classes, self.display_names = list(clf.classes), list(clf.display_names)
        self.workers: dict[str, CameraWorker] = {}
        self.batcher = InferenceBatcher(self.holder, mode=config.batch, max_batch=config.max_batch, wait_ms=config.batch_wait_ms,
                                        expected=lambda: sum(1 for w in self.workers.values() if w.running))
        self.bus = EventBus()
        self.mqtt = MqttPublisher(parse_mqtt_url(config.mqtt), queue_size=config.mqtt_queue) if config.mqtt else None
        self._jsonl = JsonlSink(config.jsonl) if config.jsonl is not None else None
        self._jsonl_health = self._jsonl.health if self._jsonl is not None else None  # kept after the sink closes
        self.actions = DecisionActions(config.actions)
        self._jsonl_lock = threading.Lock()
        opts = config.camera
        if config.save is not None:
            opts = CameraOptions(**{**opts.__dict__, "save_dir": Path(config.save)})
        for cam_id, spec in specs:
            self.workers[cam_id] = CameraWorker(cam_id, spec, self.batcher, self.classes, self.display_names, opts,
                                                on_event=self._write_event, on_decision=self._on_decision,
                                                on_frame=self._on_frame)
        self.discovery: HaDiscovery | None = None
        if config.actions.mqtt_discovery is not None:
            if self.mqtt is None:
                raise WasteEdgeError(NEEDS_MQTT)
            self.discovery = HaDiscovery(self.mqtt, list(self.workers), [*self.classes, UNCERTAIN], dict(zip(self.classes, self.display_names)),
                                         config.actions.mqtt_discovery)
        # One collector per camera (its own rate limit, near-duplicate memory and file-name slug), one folder.
        self.collectors: dict[str, Collector] = {}
        if config.collect is not None:
            current = self.holder.current
            for cam_id in self.workers:
                self.collectors[cam_id] = Collector(config.collect, classes=self.classes, model_sha256=current.sha256,
                                                    model_name=current.path.name, camera=cam_id)
        self.adapt_lock = threading.Lock()  # one adaptation at a time
        self.classify_pool = ThreadPoolExecutor(max_workers=max(1, config.classify_workers), thread_name_prefix="waste-edge classify")
        self.classify_pending = 0
        self.classify_lock = threading.Lock()
        self.stopping = threading.Event()
        self.started_at = time.time()
        self._summary_thread = threading.Thread(target=self._summaries, name="waste-edge summaries", daemon=True)
        self._stopped = False
        from waste_edge.serve.metrics import ServiceMetrics  # prometheus-client: the [serve] extra

        self.metrics = ServiceMetrics(self)

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.batcher.start()
        if self.mqtt is not None:
            self.mqtt.start()
        for w in self.workers.values():
            w.start()
        self._summary_thread.start()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.stopping.set()
        for w in self.workers.values():
            w.request_stop()
        for w in self.workers.values():
            if not w.join(timeout=10.0):
                log.warning("camera %s did not stop within 10 s", w.id)
        self.batcher.stop()
        for c in self.collectors.values():
            c.close()
        self.classify_pool.shutdown(wait=True, cancel_futures=True)
        if self._jsonl is not None:
            with self._jsonl_lock:
                for w in self.workers.values():
                    s = w.status()
                    self._jsonl.write({"camera": w.id, "event": "stop", "ts": round(time.time(), 3), "state": s["state"],
                                       "frames": s["counters"]["frames"], "counters": s["counters"], "labels": s["labels"]})
                self._jsonl.close()
                self._jsonl = None
        self.actions.close()  # the cameras have stopped: no decision comes after this
        if self.mqtt is not None:
            self._publish_summaries()
            self.mqtt.stop()
        self.holder.close()

    # -- camera callbacks (camera threads) -------------------------------------------------------------------

    def _write_event(self, event: dict[str, Any]) -> None:
        with self._jsonl_lock:
            if self._jsonl is not None:
                self._jsonl.write(event)

    def _on_frame(self, worker: CameraWorker, frame: Any, info: Any, decision: Any, result: Any) -> None:
        """Per classified frame (camera thread): metrics; the place where frame collection plugs in."""
        self.metrics.observe_frame(worker.id, result.infer_ms / 1e3)
        collector = self.collectors.get(worker.id)
        if collector is not None:
            if collector.model_sha256 != result.model_sha256:  # the frame was classified by a swapped-in model
                collector.set_model(result.model_sha256, self.holder.current.path.name)
            collector.offer(frame, result.probs, decision.confidence, index=info.index, channel_order=worker.channel_order)

    def _on_decision(self, worker: CameraWorker, decision: dict[str, Any]) -> None:
        """A camera's decided label changed (its thread): the one place every decision sink is fed."""
        previous = worker.last_published_label
        worker.last_published_label = decision["label"]
        event = DecisionEvent(worker.id, decision["label"], decision["display_name"], decision["confidence"], decision["probabilities"],
                              previous, decision["frame"], self.holder.current.sha256, decision["ts"])
        self.bus.publish({"type": "decision", "camera": worker.id, **decision})
        if self.mqtt is not None:
            self.mqtt.publish(f"{worker.id}/decision", event.fields())
        self.actions.on_decision(event)

    def _summaries(self) -> None:
        interval = self.config.mqtt_summary_s
        while self.mqtt is not None and interval > 0 and not self.stopping.wait(interval):
            self._publish_summaries()

    def _publish_summaries(self) -> None:
        assert self.mqtt is not None
        for w in self.workers.values():
            s = w.status()
            self.mqtt.publish(f"{w.id}/summary", {
                "schema": SUMMARY_SCHEMA, "camera": w.id, "state": s["state"],
                "decision": s["decision"]["label"] if s["decision"] else None, "fps": s["fps"],
                "frames": s["counters"]["frames"], "last_hour": s["last_hour"],
                "latency_ms": s["latency_ms"].get("total", {}), "dropped": s["counters"]["dropped"],
                "reconnects": s["counters"]["reconnects"], "model": self.holder.current.sha256,
            })

    # -- reading ---------------------------------------------------------------------------------------------

    def _sink_healths(self) -> list[Any]:
        """`SinkHealth` of the JSONL sink and of every camera's video (runtime/sinks.py)."""
        videos = [w.video.health for w in self.workers.values() if w.video is not None]
        return ([self._jsonl_health] if self._jsonl_health is not None else []) + videos

    def losses(self) -> list[str]:
        """One line per output that could not write everything (JSONL, videos, collected frames): the stop summary."""
        lines = [line for h in self._sink_healths() if (line := h.summary())]
        lines += [f"collect {c.folder} ({cam}): {c.stats.write_errors} frames could not be saved"
                  for cam, c in self.collectors.items() if c.stats.write_errors]
        return lines

    def health(self) -> list[str]:
        """Why the service is not healthy (empty: healthy)."""
        reasons = []
        for w in self.workers.values():
            state = w.state
            if state in DOWN_STATES:
                reasons.append(f"camera {w.id} {state}" + (f": {w.error}" if w.error else ""))
            elif w.inference_failing:
                reasons.append(f"model failed on camera {w.id}: {w.error}")
        reasons += self.holder.problems()
        if self.stopping.is_set():
            reasons.append("stopping")
        return reasons

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "uptime_s": round(time.time() - self.started_at, 3),
            "model": self.holder.current.info(),
            "model_swaps": self.holder.swaps,
            "classes": self.classes,
            "cameras": [w.status() for w in self.workers.values()],
            "batching": self.batcher.status(),
            "mqtt": self.mqtt.status() if self.mqtt is not None else None,
            "mqtt_discovery": asdict(self.discovery.status()) if self.discovery is not None else None,
            **asdict(self.actions.status()),  # "on_decision", "webhooks"
            "jsonl": str(self.config.jsonl) if self.config.jsonl is not None else None,
            "sinks": [h.to_dict() for h in self._sink_healths()],
            "events_subscribers": self.bus.subscribers,
            "classify": {"pending": self.classify_pending, "workers": self.config.classify_workers,
                         "max_body_bytes": self.config.max_body_bytes, "max_pixels": self.config.max_pixels},
            "collect": ({"folder": str(self.config.collect.folder), "below": self.config.collect.below,
                         "cameras": {cam: c.stats.to_dict() for cam, c in self.collectors.items()}} if self.config.collect else None),
            "healthy": not self.health(),
        }
