"""What `waste-edge serve` is told (`ServeConfig`): its own flags declared on its fields, the option groups it
shares with other verbs (model, decision, source, collection, --jsonl) as fields of their own types.

Light imports only (no FastAPI, paho or prometheus-client): the CLI builds its parser from this class on every
call, with or without the [serve] extra installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from waste_edge._options import common, float_in, int_in, option
from waste_edge._outputs import output_folder
from waste_edge.runtime.classifier import ModelOptions
from waste_edge.runtime.collector import CollectConfig
from waste_edge.runtime.decision import DecisionOptions
from waste_edge.runtime.sources import DEVICE_FORMS, SourceOptions
from waste_edge.serve.actions import ActionOptions
from waste_edge.serve.limits import HttpOptions

BATCH_MODES = ("auto", "on", "off")


@dataclass
class ServeConfig:
    """Classify N sources (cameras, RTSP/HTTP streams, videos, image folders) with one model in one process,
    batching their frames into shared inference calls when that is faster, and serve a live page (/), MJPEG
    streams (/stream/CAMERA.mjpg), snapshots (/api/v1/cameras/CAMERA/latest.jpg), JSON status (/api/v1/status),
    photo classification (POST /api/v1/classify), Server-Sent Events (/api/v1/events), /healthz and /metrics.
    SIGTERM or Ctrl-C stops the sources, flushes JSONL / video / --on-decision / webhooks / MQTT and exits 0.
    Needs the [serve] extra.

    Everything `serve` is told. Fields declared with `option()` are its own flags; the groups it shares with
    other verbs (model, decision, source, collection, --jsonl) are fields of their own types."""

    EPILOG: ClassVar[str] = (
        f"{DEVICE_FORMS} NAME=SOURCE names the camera (default cam0, cam1, ...). Without --device only the classify API runs.\n"
        "MQTT topics under PREFIX (mqtt://HOST:PORT/PREFIX): PREFIX/status (online/offline, retained, last will), "
        "PREFIX/CAMERA/decision (JSON per decision change), PREFIX/CAMERA/summary (JSON every --mqtt-summary s).\n"
        "examples:\n"
        "  waste-edge serve --device 0 --smooth 5 --threshold 0.7\n"
        "  waste-edge serve --device door=rtsp://cam1/stream --device belt=rtsp://cam2/stream --host 0.0.0.0 --token-file /etc/waste-edge/token \\\n"
        "      --mqtt mqtt://broker:1883/factory/bin3 --jsonl /var/lib/waste-edge/events.jsonl\n"
        "  waste-edge serve --device bin=0 --on-decision 'python3 deploy/raspberry-pi/flap.py' \\\n"
        "      --webhook http://nodered.local:1880/waste --mqtt mqtt://homeassistant.local/waste-edge --mqtt-discovery\n"
        "  curl -s --data-binary @photo.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8080/api/v1/classify")

    devices: list[str] = field(default_factory=list)  # source specs, optionally NAME=SPEC
    model: ModelOptions = field(default_factory=ModelOptions)
    decision: DecisionOptions = field(default_factory=DecisionOptions)
    source: SourceOptions = field(default_factory=SourceOptions)  # stall timeout, loop, realtime (its device is unused)
    collect: CollectConfig | None = None  # --collect: save each camera's uncertain frames there (Review view, adapt)
    actions: ActionOptions = field(default_factory=ActionOptions)  # --on-decision, --webhook, --mqtt-discovery
    jsonl: str | Path | None = None
    host: str = option("127.0.0.1", "--host", help="address to listen on (default: %(default)s; 0.0.0.0 for every interface)")
    port: int = option(8080, "--port", type=int_in(0, 65535), help="TCP port (default: %(default)s; 0 picks a free one, printed at start)")
    token: str | None = None  # from --token-file, --token or WASTE_EDGE_TOKEN (limits.AccessOptions.resolve)
    models_dir: Path | None = None  # --models-dir: what POST /api/v1/model may serve, where adapt writes (default COLLECT/models)
    http: HttpOptions = field(default_factory=HttpOptions)  # connection and body limits, allowed hosts and origins
    mqtt: str | None = option(None, "--mqtt", metavar="mqtt://HOST:PORT/PREFIX", help="publish decisions, summaries and online/offline to this broker")
    mqtt_queue: int = option(1000, "--mqtt-queue", type=int_in(1, 1_000_000), metavar="N",
                             help="messages kept while the broker is away; the oldest beyond are dropped and counted (default: %(default)s)")
    mqtt_summary_s: float = option(60.0, "--mqtt-summary", type=float_in(0.0, 86_400.0), metavar="S",
                                   help="seconds between summary messages per camera (default: %(default)s; 0: only at exit)")
    save_dir: Path | None = option(None, "--save-dir", type=output_folder, metavar="DIR", help="annotated video per camera: DIR/CAMERA.mp4")
    batching: str = option("auto", "--batching", choices=BATCH_MODES,
                           help="frames of several cameras in one inference call: auto measures which is faster (default: %(default)s)")
    max_batch: int = option(8, "--max-batch", type=int_in(1, 1024), metavar="N", help="most frames per inference call (default: %(default)s)")
    stream_fps: float = option(10.0, "--stream-fps", type=float_in(0.0, 120.0, open_lo=True), metavar="F",
                               help="most MJPEG frames per second per camera, encoded only while watched (default: %(default)s)")
    max_body_mb: float = option(10.0, "--max-body-mb", type=float_in(0.0, 1024.0, open_lo=True), metavar="MB",
                                help="largest classify upload; larger gets 413 (default: %(default)s)")
    max_pixels: int = common("--max-pixels", 40_000_000, help="largest classify image in pixels, read from its header; larger gets 413 "
                                                              "(default: %(default)s)")
    batch_wait_ms: float = 2.0
    classify_workers: int = 2
    classify_queue: int = 128
    jpeg_quality: int = 80  # of the MJPEG frames
    open_backoff: tuple[float, float] = (1.0, 30.0)  # seconds between attempts to open a camera, doubling
    # `waste_edge.adapt.adapter.adapt`, handed in by the CLI: serve may import only the runtime (ARCHITECTURE.md).
    adapter: Callable[..., Any] | None = None

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)
