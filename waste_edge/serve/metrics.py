"""Prometheus metrics (prometheus-client), in a registry of the service's own.

Counters that the cameras and sources already keep (frames, decisions by label, drops, reconnects, ...)
are read at scrape time by a collector, so there is one source of truth and no double counting; the
latency histograms are observed as frames and requests happen. All names start with `waste_edge_`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

if TYPE_CHECKING:
    from waste_edge.serve.actions import ActionsStatus
    from waste_edge.serve.service import Service

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _ServiceCollector:
    def __init__(self, service: "Service") -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        svc = self.service
        cams = [w.status() for w in svc.workers.values()]
        frames = CounterMetricFamily("waste_edge_frames", "Frames classified", labels=["camera"])
        decisions = CounterMetricFamily("waste_edge_decisions", "Classified frames by decided label (after smoothing and threshold)", labels=["camera", "label"])
        changes = CounterMetricFamily("waste_edge_decision_changes", "Changes of the decided label", labels=["camera"])
        dropped = CounterMetricFamily("waste_edge_dropped_frames", "Frames a live source dropped because newer ones arrived", labels=["camera"])
        reconnects = CounterMetricFamily("waste_edge_reconnects", "Successful reopens of a source", labels=["camera"])
        stalls = CounterMetricFamily("waste_edge_stalls", "Reads that blocked past the stall timeout", labels=["camera"])
        failures = CounterMetricFamily("waste_edge_read_failures", "Reads that returned no frame", labels=["camera"])
        bad = CounterMetricFamily("waste_edge_bad_frames", "Frames the model could not take (skipped)", labels=["camera"])
        inf_err = CounterMetricFamily("waste_edge_inference_errors", "Inference calls that raised", labels=["camera"])
        up = GaugeMetricFamily("waste_edge_camera_up", "1 while the camera delivers frames", labels=["camera", "state"])
        fps = GaugeMetricFamily("waste_edge_camera_fps", "Frames per second over the last 5 s", labels=["camera"])
        for c in cams:
            cam, n = c["id"], c["counters"]
            frames.add_metric([cam], n["frames"])
            for label, count in c["labels"].items():
                decisions.add_metric([cam, label], count)
            changes.add_metric([cam], n["decision_changes"])
            dropped.add_metric([cam], n["dropped"])
            reconnects.add_metric([cam], n["reconnects"])
            stalls.add_metric([cam], n["stalls"])
            failures.add_metric([cam], n["read_failures"])
            bad.add_metric([cam], n["skipped_bad_frames"])
            inf_err.add_metric([cam], n["inference_errors"])
            up.add_metric([cam, c["state"]], 1.0 if c["state"] == "connected" else 0.0)
            fps.add_metric([cam], c["fps"])
        yield from (frames, decisions, changes, dropped, reconnects, stalls, failures, bad, inf_err, up, fps)
        b = svc.batcher.status()
        calls = CounterMetricFamily("waste_edge_inference_calls", "Inference calls of the camera frames (a batch is one call)")
        calls.add_metric([], b["calls"])
        yield calls
        model = svc.holder.current
        info = InfoMetricFamily("waste_edge_model", "The model being served")
        info.add_metric([], {"sha256": model.sha256, "name": model.path.name, "backend": model.classifier.backend})
        yield info
        if svc.mqtt is not None:
            m = svc.mqtt.status()
            sent = CounterMetricFamily("waste_edge_mqtt_sent", "MQTT messages acknowledged by the broker")
            sent.add_metric([], m["sent"])
            drop = CounterMetricFamily("waste_edge_mqtt_dropped", "MQTT messages dropped from the full queue while the broker was away")
            drop.add_metric([], m["dropped"])
            queued = GaugeMetricFamily("waste_edge_mqtt_queued", "MQTT messages waiting for the broker")
            queued.add_metric([], m["queued"])
            conn = GaugeMetricFamily("waste_edge_mqtt_connected", "1 while connected to the broker")
            conn.add_metric([], 1.0 if m["connected"] else 0.0)
            yield from (sent, drop, queued, conn)
        yield from _action_metrics(svc.actions.status())


_HOOK_OUTCOMES = ("succeeded", "failed", "timed_out", "start_errors", "superseded", "abandoned")


def _action_metrics(s: "ActionsStatus") -> Iterator[Metric]:
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
    def __init__(self, service: "Service") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ServiceCollector(service))  # type: ignore[arg-type]
        self.inference = Histogram("waste_edge_inference_seconds", "Duration of the inference call that carried a camera frame",
                                   ["camera"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.classify = Histogram("waste_edge_classify_seconds", "POST /api/v1/classify: decode + inference",
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self.requests = Counter("waste_edge_classify_requests", "POST /api/v1/classify answers by HTTP status", ["status"], registry=self.registry)

    def observe_frame(self, camera: str, infer_s: float) -> None:
        self.inference.labels(camera).observe(infer_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
