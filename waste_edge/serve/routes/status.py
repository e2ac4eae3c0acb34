"""GET /api/v1/status (JSON), /healthz (200 or 503 with the reasons) and /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from waste_edge.serve.auth import require_token
from waste_edge.serve.metrics import CONTENT_TYPE

router = APIRouter()


@router.get("/api/v1/status", dependencies=[Depends(require_token)])
def status(request: Request) -> Response:
    """Model (path, sha256, classes, backend), cameras (state, decision, fps, latency percentiles, counters,
    last-hour counts), batching, MQTT and classify figures; `http`: open connections, limits, and counts of
    refused or cut requests (timeouts, evictions, hang-ups, cross-site)."""
    app = request.app
    guard = app.state.connections
    http = guard.status() if guard is not None else {"limits": dict(app.state.limits.__dict__)}
    http["events"] = {**http.get("events", {}), **app.state.http_events.counts()}
    catalogue = app.state.catalogue
    body = {**app.state.service.snapshot().to_dict(), "http": http, "models_folder": str(catalogue.folder) if catalogue.folder else None}
    return JSONResponse(body)  # plain JSON: no per-field encoder walk


@router.get("/healthz")
def healthz(request: Request) -> Response:
    reasons = request.app.state.service.snapshot().health()
    if reasons:
        return JSONResponse({"status": "unhealthy", "reasons": reasons}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/metrics", dependencies=[Depends(require_token)])
def metrics(request: Request) -> Response:
    return PlainTextResponse(request.app.state.service.metrics.render(), media_type=CONTENT_TYPE)
