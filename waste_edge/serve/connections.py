"""Connection-level limits uvicorn does not have: request-head and body deadlines, stalled writes, a connection cap.

uvicorn's `timeout_keep_alive` only covers the idle time between requests, and any received byte cancels it, so a
client that connects and sends nothing (or half a request line, or a byte a minute) holds its connection for
ever; 1,100 of them exhausted the open-file limit and /healthz stopped answering. ASGI middleware cannot help:
it runs only once a whole request head has arrived. So this is a subclass of uvicorn's h11 protocol (the pure-
Python one, the same on every platform; `uvicorn.Config(http=...)` takes the class), with three timers per
connection, and one `ConnectionGuard` shared by all connections of the server:

- head deadline: a whole request head within `header_timeout_s` of the connection opening or of the previous
  response ending (Go's ReadHeaderTimeout); otherwise the connection is closed (with a 408 when part of a head
  came, silently when nothing did);
- body deadline: the whole body within `body_timeout_s` of the head (the route then sees a disconnect);
- drain: a body still coming after its answer (a 413 before the body was read) is read and dropped for at most
  `DRAIN_S`, so the client gets to read the 413 (closing at once would reset the connection under it);
- write stall: a response whose bytes nobody reads (an MJPEG or SSE viewer that stopped reading) for
  `send_timeout_s` is aborted, so a stuck client cannot pin buffers or a stream generator for ever;
- cap: with more than `max_connections` open, the connection idle the longest (waiting for a request head, the
  newest one included) is closed; streams and requests in progress are never cut for a newcomer.

A request head that uvicorn cannot even turn into a scope is answered 400 instead of raising into asyncio.
Every event is counted (`/api/v1/status` -> http) and logged as one rate-limited line (`serve/logs.py`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from waste_edge.serve.limits import HttpLimits
from waste_edge.serve.logs import EventCounter

log = logging.getLogger(__name__)
DRAIN_S = 10.0  # nginx's lingering_time is 30 s


def _plain_response(status: str, text: str) -> bytes:
    body = (text + "\n").encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


class ConnectionGuard:
    """The server-wide part: limits, counters, and the open connections in the order they came."""

    def __init__(self, limits: HttpLimits, events: EventCounter | None = None) -> None:
        self.limits = limits
        self.events = events or EventCounter(log)
        self._open: dict["GuardedH11Protocol", None] = {}  # insertion order = age

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def opened(self, conn: "GuardedH11Protocol") -> None:
        self._open[conn] = None
        if len(self._open) > self.limits.max_connections:
            victim = next((c for c in self._open if c.waiting_for_head and not c.transport.is_closing()), None)
            if victim is not None:
                self.events.note("evicted_idle", "more than %d connections open: closed the longest idle one (more are counted in /api/v1/status)",
                                 self.limits.max_connections)
                victim.close_now()

    def closed(self, conn: "GuardedH11Protocol") -> None:
        self._open.pop(conn, None)

    def status(self) -> dict[str, Any]:
        return {"open_connections": self.open_connections, "limits": dict(self.limits.__dict__), "events": self.events.counts()}


def guarded_protocol(guard: ConnectionGuard) -> type[H11Protocol]:
    """The protocol class to hand to `uvicorn.Config(http=...)`, bound to `guard`."""

    class Protocol(GuardedH11Protocol):
        pass

    Protocol.guard = guard
    return Protocol


class GuardedH11Protocol(H11Protocol):
    guard: ConnectionGuard  # set on the class by `guarded_protocol`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_kind = ""  # "head", "body" or "drain"
        self._stall: asyncio.TimerHandle | None = None
        self._partial_head = False  # bytes of a request head have come since the last response

    # -- state -----------------------------------------------------------------------------------------------

    @property
    def waiting_for_head(self) -> bool:
        """No request in progress: a new connection, or a kept-alive one between requests."""
        return self.cycle is None or self.cycle.response_complete

    def close_now(self) -> None:
        self._cancel_timers()
        self.guard.closed(self)  # at once: a burst of newcomers must not all pick this one as their victim
        if not self.transport.is_closing():
            self.transport.close()

    def _arm(self, kind: str, seconds: float) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline_kind = kind
        self._deadline = self.loop.call_later(seconds, self._deadline_passed)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._deadline_kind = None, ""

    def _cancel_timers(self) -> None:
        self._disarm()
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    # -- asyncio.Protocol ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("head", self.guard.limits.header_timeout_s)
        self.guard.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        self.guard.closed(self)
        super().connection_lost(exc)

    @property
    def _draining(self) -> bool:
        """Answered, but the client is still sending the request body (read and dropped by uvicorn)."""
        return self.cycle is not None and self.cycle.response_complete and self.conn.their_state is h11.SEND_BODY

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        if self.waiting_for_head and not self._draining:
            self._partial_head = True
        try:
            super().data_received(data)
        except Exception as e:  # a head h11 accepted but uvicorn cannot turn into a scope: the client's fault
            self.guard.events.note("bad_request", "bad request head (%s: %s): answered 400", type(e).__name__, e)
            if not self.transport.is_closing():
                self.transport.write(_plain_response("400 Bad Request", "bad request"))
                self.close_now()
            return
        self._after_events(before)

    def on_response_complete(self) -> None:
        before = self.cycle
        super().on_response_complete()
        if self.transport.is_closing():
            return
        self._partial_head = False
        if self.cycle is before and self._draining:
            self._arm("drain", DRAIN_S)
        elif self.cycle is before:  # nothing pipelined: the next head must come in time (the keep-alive timer may close first)
            self._arm("head", self.guard.limits.header_timeout_s)
        else:
            self._after_events(before)

    def _after_events(self, before: Any) -> None:
        cycle = self.cycle
        if cycle is not before and cycle is not None:  # a request head arrived
            self._partial_head = False
            if cycle.more_body:
                self._arm("body", self.guard.limits.body_timeout_s)
            else:
                self._disarm()
        elif self._deadline_kind == "body" and cycle is not None and not cycle.more_body:
            self._disarm()
        elif self._deadline_kind == "drain" and not self._draining:  # the unwanted body has ended: next request
            self._arm("head", self.guard.limits.header_timeout_s)

    def _deadline_passed(self) -> None:
        kind, self._deadline, self._deadline_kind = self._deadline_kind, None, ""
        if self.transport.is_closing():
            return
        limits = self.guard.limits
        if kind == "head":
            if not self.waiting_for_head:
                return
            if self._partial_head:
                self.guard.events.note("head_timeout", "a client sent part of a request head but not all of it within %.0f s: closed with 408", limits.header_timeout_s)
                self.transport.write(_plain_response("408 Request Timeout", f"the request head did not arrive within {limits.header_timeout_s:g} s"))
            else:
                # Browsers open spare connections they may never use: counted, not logged.
                self.guard.events.note("idle_timeout", "a connection sent nothing for %.0f s: closed", limits.header_timeout_s, level=logging.DEBUG)
            self.close_now()
        elif kind == "drain":
            self.guard.events.note("drain_cut", "a client kept sending a refused body for %.0f s after its answer: closed", DRAIN_S)
            self.close_now()
        elif kind == "body" and self.cycle is not None and self.cycle.more_body:
            self.guard.events.note("body_timeout", "a request body did not arrive within %.0f s of its head: closed", limits.body_timeout_s)
            self.close_now()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall is None:
            self._stall = self.loop.call_later(self.guard.limits.send_timeout_s, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _stalled(self) -> None:
        self._stall = None
        self.guard.events.note("send_timeout", "a client read nothing of its response for %.0f s: connection aborted", self.guard.limits.send_timeout_s)
        self._cancel_timers()
        self.transport.abort()
