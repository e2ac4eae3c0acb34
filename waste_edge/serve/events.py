"""Decision events from camera threads to the async world (Server-Sent Events), without blocking either.

A camera thread calls `publish()`; each subscriber (one per open `/api/v1/events` connection) has its own
bounded asyncio queue on its event loop, filled through `call_soon_threadsafe`. A subscriber that reads
too slowly loses its oldest events (counted in `lost`), never slows the cameras down.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from waste_edge.runtime.decision_event import DecisionEvent
from waste_edge.runtime.observations import DecisionState
from waste_edge.runtime.pipeline import Sink


class Subscription:
    def __init__(self, bus: "EventBus", loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.bus = bus
        self.loop = loop
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=size)
        self.lost = 0

    def _put(self, event: dict[str, Any]) -> None:  # runs on the subscriber's loop
        if self.queue.full():
            self.queue.get_nowait()
            self.lost += 1
        self.queue.put_nowait(event)

    async def get(self, timeout: float) -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def close(self) -> None:
        self.bus._remove(self)


class EventBus:
    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(self) -> Subscription:
        sub = Subscription(self, asyncio.get_running_loop(), self.queue_size)
        with self._lock:
            self._subs.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, event: dict[str, Any]) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub._put, event)
            except RuntimeError:  # its loop has closed
                self._remove(sub)


class SseDecisions(Sink):
    """Each decision change of a camera as an SSE `decision` event: {type, camera, label, display_name, ...}."""

    name = "sse"

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    def on_decision(self, event: DecisionEvent) -> None:
        ts = round(event.ts, 3)  # a change: the decision is new since this frame
        self.bus.publish({"type": "decision", "camera": event.camera, "label": event.label, "display_name": event.display_name,
                          "confidence": event.confidence, "probabilities": dict(event.probabilities), "frame": event.frame,
                          "ts": ts, "since": ts})


def decision_event(camera: str, state: DecisionState) -> dict[str, Any]:
    """The SSE `decision` event of a camera's decision (sent on each change, and the current ones to a new page)."""
    return {"type": "decision", "camera": camera, **state.to_dict()}
