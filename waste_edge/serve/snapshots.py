"""What the service is doing, as typed, immutable snapshots: per camera and for the whole service.

`/api/v1/status`, `/healthz`, the SSE `stats` event, /metrics and the MQTT summaries are all built from one
`ServiceSnapshot` (`Service.snapshot()`), never from the service's or the cameras' attributes, so a reader
sees one consistent moment and none of them holds a lock while it formats. `to_dict()` is the JSON of
/api/v1/status (tests/serve/test_schemas.py pins it key by key).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from waste_edge.runtime.hooks import HookStatus
from waste_edge.runtime.observations import DecisionState
from waste_edge.runtime.stats import Percentiles
from waste_edge.serve.webhooks import WebhookStatus

if TYPE_CHECKING:
    from waste_edge.runtime.collector import CollectStats
    from waste_edge.runtime.sinks import SinkStatus

STATES = ("starting", "connected", "stalled", "reconnecting", "ended", "failed", "stopped")
DOWN_STATES = frozenset({"starting", "stalled", "reconnecting", "failed"})


@dataclass(frozen=True, slots=True)
class MqttStatus:
    """The publisher's numbers (the `mqtt` part of /api/v1/status and /metrics)."""

    broker: str
    prefix: str
    connected: bool
    queued: int
    queue_size: int
    unacknowledged: int
    sent: int  # acknowledged by the broker
    dropped: int  # dropped from the full queue (oldest first)
    connects: int
    last_error: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BatchingStatus:
    """The batcher's numbers (the `batching` part of /api/v1/status; `calls` feeds /metrics)."""

    mode: str
    batched: bool  # auto: False = concurrent direct calls
    max_batch: int
    wait_ms: float
    calls: int
    frames: int
    mean_batch: float
    calibration: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "batched": self.batched, "max_batch": self.max_batch, "wait_ms": self.wait_ms, "calls": self.calls,
                "frames": self.frames, "mean_batch": self.mean_batch, "calibration": dict(self.calibration) if self.calibration else None}


@dataclass(frozen=True, slots=True)
class DiscoveryStatus:
    """Home Assistant MQTT discovery (the `mqtt_discovery` part of /api/v1/status)."""

    prefix: str
    node_id: str
    entities: int  # config messages this service keeps retained
    published: int  # config messages sent (all connects)
    removed: int  # stale configs (and their retained state topics) cleared
    syncs: int  # read-backs completed
    last_sync: float | None  # Unix time of the last one
    last_error: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ActionsStatus:
    """--on-decision and --webhook (the `on_decision` and `webhooks` parts of /api/v1/status)."""

    on_decision: HookStatus | None
    webhooks: tuple[WebhookStatus, ...]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The served model (the `model` part of /api/v1/status; /metrics' waste_edge_model_info)."""

    path: str
    name: str
    sha256: str
    loaded_at: float
    classes: tuple[str, ...]
    display_names: tuple[str, ...]
    encoder: str
    variant: str
    backend: str
    provider: str
    description: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"], d["display_names"] = list(self.classes), list(self.display_names)
        return d


@dataclass(frozen=True, slots=True)
class Counters:
    """A camera's counters since the service started, over every source it opened (reopens, replays)."""

    frames: int
    skipped_bad_frames: int
    inference_errors: int
    decision_changes: int
    dropped: int
    read_failures: int
    stalls: int
    reconnects: int
    skipped_files: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CameraSnapshot:
    id: str
    source: str  # the source's display name (credentials redacted)
    kind: str
    state: str  # one of STATES
    error: str
    inference_failing: bool
    decision: DecisionState | None
    fps: float
    latency: tuple[tuple[str, Percentiles], ...]  # read, queue, infer, total
    last_frame_age_s: float | None
    counters: Counters
    labels: tuple[tuple[str, int], ...]  # frames per decided label since start
    last_hour: tuple[tuple[str, int], ...]
    stream_viewers: int
    sink_failures: tuple[tuple[str, int], ...] = ()

    @property
    def down(self) -> bool:
        return self.state in DOWN_STATES

    def latency_ms(self) -> dict[str, dict[str, float]]:
        return {stage: p.rounded() for stage, p in self.latency}

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "source": self.source, "kind": self.kind, "state": self.state, "error": self.error,
            "inference_failing": self.inference_failing, "decision": self.decision.to_dict() if self.decision else None,
            "fps": self.fps, "latency_ms": self.latency_ms(), "last_frame_age_s": self.last_frame_age_s,
            "counters": self.counters.to_dict(), "labels": dict(self.labels), "last_hour": dict(self.last_hour),
            "stream_viewers": self.stream_viewers,
        }


@dataclass(frozen=True, slots=True)
class ClassifyStatus:
    pending: int
    workers: int
    max_body_bytes: int
    max_pixels: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CollectStatus:
    folder: str
    below: float
    cameras: tuple[tuple[str, "CollectStats"], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "below": self.below, "cameras": {cam: s.to_dict() for cam, s in self.cameras}}


@dataclass(frozen=True, slots=True)
class ServiceSnapshot:
    version: str
    uptime_s: float
    model: ModelInfo
    model_swaps: int
    model_problems: tuple[str, ...]  # the served model failed classify requests and has not answered since
    classes: tuple[str, ...]
    cameras: tuple[CameraSnapshot, ...]
    batching: BatchingStatus
    mqtt: MqttStatus | None
    mqtt_discovery: DiscoveryStatus | None
    actions: ActionsStatus  # --on-decision and --webhook
    jsonl: str | None
    sinks: tuple[SinkStatus, ...]  # what the JSONL file and the videos could not write
    events_subscribers: int
    classify: ClassifyStatus
    collect: CollectStatus | None
    stopping: bool

    def health(self) -> list[str]:
        """Why the service is not healthy (empty: healthy)."""
        reasons = []
        for c in self.cameras:
            if c.down:
                reasons.append(f"camera {c.id} {c.state}" + (f": {c.error}" if c.error else ""))
            elif c.inference_failing:
                reasons.append(f"model failed on camera {c.id}: {c.error}")
        reasons += self.model_problems
        if self.stopping:
            reasons.append("stopping")
        return reasons

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "uptime_s": self.uptime_s,
            "model": self.model.to_dict(),
            "model_swaps": self.model_swaps,
            "classes": list(self.classes),
            "cameras": [c.to_dict() for c in self.cameras],
            "batching": self.batching.to_dict(),
            "mqtt": self.mqtt.to_dict() if self.mqtt is not None else None,
            "mqtt_discovery": self.mqtt_discovery.to_dict() if self.mqtt_discovery is not None else None,
            **asdict(self.actions),  # "on_decision", "webhooks"
            "jsonl": self.jsonl,
            "sinks": [h.to_dict() for h in self.sinks],
            "events_subscribers": self.events_subscribers,
            "classify": self.classify.to_dict(),
            "collect": self.collect.to_dict() if self.collect is not None else None,
            "healthy": not self.health(),
        }

    def losses(self) -> list[str]:
        """One line per output that could not write everything (JSONL, videos, collected frames): the stop summary."""
        lines = [line for h in self.sinks if (line := h.summary())]
        if self.collect is not None:
            lines += [f"collect {self.collect.folder} ({cam}): {st.write_errors} frames could not be saved"
                      for cam, st in self.collect.cameras if st.write_errors]
        return lines
