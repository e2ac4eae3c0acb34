"""The service object: one model, N cameras (each a frame loop with its sinks), the batcher, and their lifecycle.

Each camera is a `CameraWorker` running `runtime.pipeline.FramePipeline` with the service's sinks: frame
collection, the annotated video, the MJPEG stream (pixel sinks), then the inference histogram, the shared
JSONL file, MQTT decision messages, SSE decision events and the decision actions (`--on-decision`,
`--webhook`: `serve/actions.py`). What the service reports (/api/v1/status, /healthz, /metrics, the MQTT
summaries, the JSONL stop records) is built from one typed `ServiceSnapshot`.

The HTTP layer (`app.py`, `routes/`) reads snapshots and hands work in; tests and `server.run_server` start
and stop it. `stop()` is the clean end a SIGTERM asks for: cameras stop (their sources closed, so a read
blocked on a dead camera returns), in-flight inferences finish, each camera's JSONL gets a final `stop`
record after its last frame event, videos are closed, `--on-decision` commands finish and webhooks deliver
what is queued (within `ActionOptions.flush_s`), MQTT sends what is queued and then "offline".
"""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from waste_edge import __version__
from waste_edge._outputs import check_apart
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.collector import CollectFrames, Collector
from waste_edge.runtime.decision import UNCERTAIN
from waste_edge.runtime.pipeline import Sink
from waste_edge.runtime.sinks import AnnotatedVideo, Decisions, JsonlEvents, JsonlSink, VideoSink
from waste_edge.runtime.sources import SourceError, parse_spec
from waste_edge.serve.actions import DecisionActions
from waste_edge.serve.batcher import InferenceBatcher
from waste_edge.serve.camera_worker import CameraWorker
from waste_edge.serve.classify import ClassifyGate
from waste_edge.serve.config import ServeConfig
from waste_edge.serve.events import EventBus, SseDecisions
from waste_edge.serve.ha_discovery import NEEDS_MQTT, HaDiscovery
from waste_edge.serve.mjpeg import MjpegStream, StreamFrame
from waste_edge.serve.model_holder import LoadedModel, ModelHolder, load_model
from waste_edge.serve.mqtt import MqttDecisions, MqttPublisher, parse_mqtt_url, summary_message
from waste_edge.serve.snapshots import ClassifyStatus, CollectStatus, ServiceSnapshot

log = logging.getLogger(__name__)

__all__ = ["CAMERA_ID", "ServeConfig", "Service", "camera_specs"]

CAMERA_ID = r"[A-Za-z][A-Za-z0-9_-]{0,31}"  # what a camera may be named (cam0, door, belt-2): safe in topics, URLs, file names
_NAMED = re.compile(rf"^({CAMERA_ID})=(.+)$")


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
        from waste_edge.serve.metrics import InferenceTimes, ServiceMetrics  # prometheus-client: the [serve] extra

        self.config = config
        specs = camera_specs(config.devices)
        if config.collect is not None:  # a looping folder source must never read back its own collected frames
            check_apart(config.collect.folder, [spec for _, spec in specs], option="--collect")
        m = config.model
        self.holder = ModelHolder(model or load_model(m.model, m.backend, m.threads), backend=m.backend, threads=m.threads)
        clf = self.holder.current.classifier
        self.classes, self.display_names = list(clf.classes), list(clf.display_names)
        self.workers: dict[str, CameraWorker] = {}
        self.batcher = InferenceBatcher(self.holder, mode=config.batching, max_batch=config.max_batch, wait_ms=config.batch_wait_ms,
                                        expected=lambda: sum(1 for w in self.workers.values() if w.running))
        self.bus = EventBus()
        self.mqtt = MqttPublisher(parse_mqtt_url(config.mqtt), queue_size=config.mqtt_queue) if config.mqtt else None
        self.metrics = ServiceMetrics(self.snapshot)
        self._jsonl = JsonlSink(config.jsonl) if config.jsonl is not None else None
        self._jsonl_health = self._jsonl.health if self._jsonl is not None else None  # kept after the sink closes
        self._jsonl_lock = threading.Lock()
        self.actions = DecisionActions(config.actions)
        self.streams: dict[str, StreamFrame] = {}
        self._videos: dict[str, VideoSink] = {}  # --save-dir: each camera's video (its losses are reported)
        # One collector per camera (its own rate limit, near-duplicate memory and file-name slug), one folder.
        self.collectors: dict[str, Collector] = {}
        for cam_id, spec in specs:
            self.streams[cam_id] = StreamFrame(config.stream_fps)
            self.workers[cam_id] = CameraWorker(
                cam_id, spec, infer=self.batcher.infer, classes=self.classes, display_names=self.display_names, decision=config.decision,
                source=config.source, sinks=self._sinks(cam_id, InferenceTimes(self.metrics, cam_id)), stream=self.streams[cam_id],
                open_backoff=config.open_backoff)
        self.discovery: HaDiscovery | None = None
        if config.actions.mqtt_discovery is not None:
            if self.mqtt is None:
                raise WasteEdgeError(NEEDS_MQTT)
            self.discovery = HaDiscovery(self.mqtt, list(self.workers), [*self.classes, UNCERTAIN], dict(zip(self.classes, self.display_names)),
                                         config.actions.mqtt_discovery)
        self.adapt_lock = threading.Lock()  # one adaptation at a time
        self.classify_pool = ThreadPoolExecutor(max_workers=max(1, config.classify_workers), thread_name_prefix="waste-edge classify")
        self.classify_gate = ClassifyGate(config.classify_queue)
        self.stopping = threading.Event()
        self.started_at = time.time()
        self._summary_thread = threading.Thread(target=self._summaries, name="waste-edge summaries", daemon=True)
        self._stopped = False

    def _sinks(self, cam_id: str, metrics_sink: Sink) -> list[Sink]:
        """A camera's sinks, in the order they see a frame: pixels first (collection before any overlay), then records."""
        cfg = self.config
        sinks: list[Sink] = []
        if cfg.collect is not None:
            current = self.holder.current
            collector = self.collectors[cam_id] = Collector(cfg.collect, classes=self.classes, model_sha256=current.sha256,
                                                            model_name=current.path.name, camera=cam_id)
            sinks.append(CollectFrames(collector, model_name=lambda: self.holder.current.path.name))
        if cfg.save_dir is not None:
            video = self._videos[cam_id] = VideoSink(Path(cfg.save_dir) / f"{cam_id}.mp4")
            sinks.append(AnnotatedVideo(video))
        sinks += [MjpegStream(self.streams[cam_id], cfg.jpeg_quality), metrics_sink]
        if self._jsonl is not None:
            sinks.append(JsonlEvents(self._jsonl, with_camera=True, lock=self._jsonl_lock, owns=False))
        if self.mqtt is not None:
            sinks.append(MqttDecisions(self.mqtt))
        sinks += [SseDecisions(self.bus), Decisions(self.actions, owns=False)]  # the actions are closed once, in stop()
        return sinks

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
        snap = self.snapshot()
        if self._jsonl is not None:
            with self._jsonl_lock:
                for cam in snap.cameras:
                    self._jsonl.write({"camera": cam.id, "event": "stop", "ts": round(time.time(), 3), "state": cam.state,
                                       "frames": cam.counters.frames, "counters": cam.counters.to_dict(), "labels": dict(cam.labels)})
                self._jsonl.close()
                self._jsonl = None
        self.actions.close()  # the cameras have stopped: no decision comes after this
        if self.mqtt is not None:
            self._publish_summaries(snap)
            self.mqtt.stop()
        self.holder.close()

    # -- MQTT summaries ----------------------------------------------------------------------------------------

    def _summaries(self) -> None:
        interval = self.config.mqtt_summary_s
        while self.mqtt is not None and interval > 0 and not self.stopping.wait(interval):
            self._publish_summaries(self.snapshot())

    def _publish_summaries(self, snap: ServiceSnapshot) -> None:
        assert self.mqtt is not None
        for cam in snap.cameras:
            self.mqtt.publish(f"{cam.id}/summary", summary_message(cam, snap.model.sha256))

    # -- reading ---------------------------------------------------------------------------------------------

    def snapshot(self) -> ServiceSnapshot:
        """Everything the service reports, at one moment (status, health, metrics, summaries)."""
        cfg = self.config
        collect = None
        if cfg.collect is not None:
            collect = CollectStatus(str(cfg.collect.folder), cfg.collect.below,
                                    tuple((cam, replace(c.stats)) for cam, c in self.collectors.items()))
        healths = ([self._jsonl_health] if self._jsonl_health is not None else []) + [v.health for v in self._videos.values()]
        return ServiceSnapshot(
            version=__version__, uptime_s=round(time.time() - self.started_at, 3), model=self.holder.current.info(),
            model_swaps=self.holder.swaps, model_problems=tuple(self.holder.problems()), classes=tuple(self.classes),
            cameras=tuple(w.snapshot() for w in self.workers.values()),
            batching=self.batcher.status(), mqtt=self.mqtt.status() if self.mqtt is not None else None,
            mqtt_discovery=self.discovery.status() if self.discovery is not None else None, actions=self.actions.status(),
            jsonl=str(cfg.jsonl) if cfg.jsonl is not None else None, sinks=tuple(h.status() for h in healths),
            events_subscribers=self.bus.subscribers,
            classify=ClassifyStatus(self.classify_gate.pending, cfg.classify_workers, cfg.max_body_bytes, cfg.max_pixels),
            collect=collect, stopping=self.stopping.is_set(),
        )

    def losses(self) -> list[str]:
        """One line per output that could not write everything (JSONL, videos, collected frames): the stop summary."""
        return self.snapshot().losses()

    def stream(self, camera: str) -> StreamFrame | None:
        """The MJPEG frame holder of a camera (None: no such camera)."""
        return self.streams.get(camera)
