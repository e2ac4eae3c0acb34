"""Prometheus metrics (prometheus-client), in a registry of the service's own.

Counters that the cameras and sources already keep (frames, decisions by label, drops, reconnects, ...) are
read at scrape time from a `ServiceSnapshot` (`serve/snapshots.py`), so there is one source of truth and no
double counting; the latency histograms are observed as frames (`InferenceTimes`, a sink of each camera's
loop) and requests happen. All names start with `waste_edge_`.
"""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from waste_edge.runtime.observations import FrameResult
from waste_edge.runtime.pipeline import Sink
from waste_edge.serve.snapshots import ActionsStatus, ServiceSnapshot

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (name, help, counter attribute) of the per-camera counters
_CAMERA_COUNTERS = (
    ("waste_edge_frames", "Frames classified", "frames"),
    ("waste_edge_decision_changes", "Changes of the decided label", "decision_changes"),
    ("waste_edge_dropped_frames", "Frames a live source dropped because newer ones arrived", "dropped"),
    ("waste_edge_reconnects", "Successful reopens of a source", "reconnects"),
    ("waste_edge_stalls", "Reads that blocked past the stall timeout", "stalls"),
    ("waste_edge_read_failures", "Reads that returned no frame", "read_failures"),
    ("waste_edge_bad_frames", "Frames the model could not take (skipped)", "skipped_bad_frames"),
    ("waste_edge_inference_errors", "Inference calls that raised", "inference_errors"),
)


class _SnapshotCollector:
    def __init__(self, snapshot: Callable[[], ServiceSnapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        counters = {name: CounterMetricFamily(name, text, labels=["camera"]) for name, text, _ in _CAMERA_COUNTERS}
        decisions = CounterMetricFamily("waste_edge_decisions", "Classified frames by decided label (after smoothing and threshold)", labels=["camera", "label"])
        up = GaugeMetricFamily("waste_edge_camera_up", "1 while the camera delivers frames", labels=["camera", "state"])
        fps = GaugeMetricFamily("waste_edge_camera_fps", "Frames per second over the last 5 s", labels=["camera"])
        sink_failures = CounterMetricFamily("waste_edge_sink_failures", "Calls of an output (JSONL, video, MQTT, ...) that raised; the camera went on", labels=["camera", "sink"])
        for c in snap.cameras:
            for name, _, attr in _CAMERA_COUNTERS:
                counters[name].add_metric([c.id], getattr(c.counters, attr))
            for label, count in c.labels:
                decisions.add_metric([c.id, label], count)
            up.add_metric([c.id, c.state], 1.0 if c.state == "connected" else 0.0)
            fps.add_metric([c.id], c.fps)
            for sink, n in c.sink_failures:
                sink_failures.add_metric([c.id, sink], n)
        frames, *rest = counters.values()
        yield from (frames, decisions, *rest, up, fps, sink_failures)
        calls = CounterMetricFamily("waste_edge_inference_calls", "Inference calls of the camera frames (a batch is one call)")
        calls.add_metric([], snap.batching.calls)
        yield calls
        info = InfoMetricFamily("waste_edge_model", "The model being served")
        info.add_metric([], {"sha256": snap.model.sha256, "name": snap.model.name, "backend": snap.model.backend})
        yield info
        if snap.mqtt is not None:
            m = snap.mqtt
            sent = CounterMetricFamily("waste_edge_mqtt_sent", "MQTT messages acknowledged by the broker")
            sent.add_metric([], m.sent)
            drop = CounterMetricFamily("waste_edge_mqtt_dropped", "MQTT messages dropped from the full queue while the broker was away")
            drop.add_metric([], m.dropped)
            queued = GaugeMetricFamily("waste_edge_mqtt_queued", "MQTT messages waiting for the broker")
            queued.add_metric([], m.queued)
            conn = GaugeMetricFamily("waste_edge_mqtt_connected", "1 while connected to the broker")
            conn.add_metric([], 1.0 if m.connected else 0.0)
            yield from (sent, drop, queued, conn)
        yield from _action_metrics(snap.actions)


_HOOK_OUTCOMES = ("succeeded", "failed", "timed_out", "start_errors", "superseded", "abandoned")


def _action_metrics(s: ActionsStatus) -> Iterator[Metric]:
    """--on-decision runs by outcome, --webhook deliveries per URL (redacted): the counters of their status snapshots."""
    if s.on_decision is not None:
        h = s.on_decision
        runs = CounterMetricFamily("waste_edge_on_decision_runs", "--on-decision decision changes by outcome "
                                   "(superseded: replaced by a newer decision while the command ran)", labels=["outcome"])
        for outcome in _HOOK_OUTCOMES:
            runs.add_metric([outcome], getattr(h, outcome))
        running = GaugeMetricFamily("waste_edge_on_decision_running", "--on-decision commands running now")
        running.add_metric([], h.running)
        yield from (runs, running)
    if s.webhooks:
        fams = {k: CounterMetricFamily(f"waste_edge_webhook_{k}", doc, labels=["url"]) for k, doc in (
            ("delivered", "Webhook messages answered with 2xx"), ("retries", "Webhook attempts after a message's first"),
            ("dropped", "Webhook messages dropped from the full queue (oldest first)"),
            ("failed", "Webhook messages given up (refused with 4xx / 3xx, or out of attempts)"),
            ("unsent", "Webhook messages still queued when the service stopped"))}
        queued = GaugeMetricFamily("waste_edge_webhook_queued", "Webhook messages waiting (in flight included)", labels=["url"])
        up = GaugeMetricFamily("waste_edge_webhook_up", "1 while the last webhook attempt was delivered", labels=["url"])
        for w in s.webhooks:
            for k, fam in fams.items():
                fam.add_metric([w.url], getattr(w, k))
            queued.add_metric([w.url], w.queued + (1 if w.in_flight else 0))
            up.add_metric([w.url], 1.0 if w.up else 0.0)
        yield from (*fams.values(), queued, up)


class ServiceMetrics:
    """The service's registry: scrape-time figures from `snapshot()`, histograms observed as things happen."""

    def __init__(self, snapshot: Callable[[], ServiceSnapshot]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SnapshotCollector(snapshot))  # type: ignore[arg-type]
        self.inference = Histogram("waste_edge_inference_seconds", "Duration of the inference call that carried a camera frame",
                                   ["camera"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.classify = Histogram("waste_edge_classify_seconds", "POST /api/v1/classify: decode + inference",
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self.requests = Counter("waste_edge_classify_requests", "POST /api/v1/classify answers by HTTP status", ["status"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class InferenceTimes(Sink):
    """Observes each camera frame's inference call in `waste_edge_inference_seconds{camera}`."""

    name = "metrics"

    def __init__(self, metrics: ServiceMetrics, camera: str) -> None:
        self.histogram = metrics.inference.labels(camera)

    def on_frame(self, result: FrameResult) -> None:
        self.histogram.observe(result.latency.infer / 1e3)
