"""GET /api/v1/events: Server-Sent Events.

`event: decision` when a camera's decided label changes (data: camera, label, display_name, confidence,
probabilities, frame, ts, since); `event: stats` once a second (data: the per-camera part of
/api/v1/status: state, fps, latency, counters, last-hour counts); a comment line every 15 s keeps proxies
from closing an idle stream. The stream ends when the service stops.

The stats event is computed and encoded once per interval for all subscribers (`StatsCache`): 50 open pages
used to cost 50 status computations a second on the event loop.
"""

from __future__ import annotations

import json
import time
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from waste_edge.serve.auth import require_token
from waste_edge.serve.events import decision_event
from waste_edge.serve.snapshots import ServiceSnapshot

router = APIRouter()


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _stats(s: ServiceSnapshot) -> dict[str, Any]:
    return {"cameras": [c.to_dict() for c in s.cameras], "model": {"sha256": s.model.sha256, "name": s.model.name},
            "healthy": not s.health(), "mqtt": s.mqtt.to_dict() if s.mqtt is not None else None, "batching": s.batching.to_dict()}


class StatsCache:
    """The encoded stats event, shared by every subscriber for `ttl_s` seconds."""

    def __init__(self, ttl_s: float = 0.5) -> None:
        self.ttl_s = ttl_s
        self._at = float("-inf")
        self._event = b""

    def event(self, svc: Any) -> bytes:
        now = time.monotonic()
        if now - self._at >= self.ttl_s:
            self._event, self._at = _sse("stats", _stats(svc.snapshot())), now
        return self._event


@router.get("/api/v1/events", dependencies=[Depends(require_token)])
async def events(request: Request) -> StreamingResponse:
    svc = request.app.state.service
    cache: StatsCache = request.app.state.stats_cache

    async def stream() -> AsyncIterator[bytes]:
        sub = svc.bus.subscribe()
        try:
            yield b"retry: 2000\n\n"
            yield cache.event(svc)
            for cam in svc.snapshot().cameras:  # the current decisions, so a new page needs no second request
                if cam.decision is not None:
                    yield _sse("decision", decision_event(cam.id, cam.decision))
            last_stats = last_ping = time.monotonic()
            while not svc.stopping.is_set():
                event = await sub.get(timeout=0.25)
                if event is not None:
                    yield _sse(event.get("type", "message"), event)
                now = time.monotonic()
                if now - last_stats >= 1.0:
                    last_stats = now
                    yield cache.event(svc)
                if now - last_ping >= 15.0:
                    last_ping = now
                    yield b": keep-alive\n\n"
        finally:
            sub.close()

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
