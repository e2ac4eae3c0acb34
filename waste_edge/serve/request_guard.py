"""Request-level guards in front of every route (pure ASGI middleware): who may call, what bodies, how failures end.

1. Host (DNS rebinding): a web page whose domain re-resolves to 127.0.0.1 reaches the service with its own name
   in `Host`. Only names of this service are accepted: any IP address (an address cannot be rebound), `localhost`,
   the machine's host names (and `<hostname>.local`) when listening beyond loopback, the `--host` name, and
   `serve --allow-host NAME`.
2. Cross-site writes: a browser on this machine must not be made to adapt or swap models by a form on another
   site (with no token, the default on loopback, that used to work). Every unsafe method (POST, PUT, PATCH,
   DELETE) is refused when `Sec-Fetch-Site` says cross-site or same-site, or when `Origin` is present and is not
   this service (`Host`) or an `--allow-origin`; token or not. Non-browser clients (curl) send neither header.
3. Bodies: each route has a `BodyRule` (its byte limit and the media types it takes; form-encoded and text/plain
   are not among them for a route that changes state). A declared `Content-Length` over the limit is answered
   413 before one byte is read; a chunked body is counted while it is read and cut at the limit (413). The rest
   of a refused body is read and dropped for a few seconds (`connections.DRAIN_S`) so the client sees the 413.
4. Failures: a client hanging up mid-upload (`ClientDisconnect`) is counted, not logged as a traceback; any
   other exception is answered 500 `{"detail": "internal error"}` and logged as one line (`serve/logs.py`).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import urlsplit

from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

from waste_edge.serve.logs import EventCounter

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON = frozenset({"application/json"})

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a body passes its route's limit (FastAPI answers it 413 like any HTTPException)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than the limit of {limit} bytes")


@dataclass(frozen=True)
class BodyRule:
    limit: int  # bytes
    types: frozenset[str] | None = JSON  # media types accepted (None: the route checks them itself)


def _host_name(value: str) -> str | None:
    """The host part of a Host header or URL netloc, lower-case, without port or trailing dot; None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1 :] and not (value[end + 1] == ":" and value[end + 2 :].isdigit())):
            return None
        return value[1:end]
    host, sep, port = value.rpartition(":")
    if not sep:
        host = value
    elif not port.isdigit():
        return None
    host = host.rstrip(".")
    if not host or any(c in host for c in " /\\@?#\t"):
        return None
    return host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _origin_netloc(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    default = ":80" if parts.scheme == "http" else ":443"
    netloc = parts.netloc.lower()
    return netloc[: -len(default)] if netloc.endswith(default) else netloc


@dataclass(frozen=True)
class SitePolicy:
    """Which Host names and Origins are this service's (see the module docstring)."""

    hosts: frozenset[str]
    origins: frozenset[str] = frozenset()
    any_host: bool = False  # --allow-host '*': behind a proxy that checks names itself

    @classmethod
    def for_bind(cls, host: str, allow_hosts: tuple[str, ...] = (), allow_origins: tuple[str, ...] = ()) -> "SitePolicy":
        names = {"localhost"}
        bound = (host or "").strip().lower().strip("[]")
        if bound and not _is_ip(bound):
            names.add(bound)
        loopback = bound == "localhost" or (_is_ip(bound) and ipaddress.ip_address(bound).is_loopback)
        if not loopback:  # reachable from other machines: they use this machine's names
            host_name = socket.gethostname().lower().rstrip(".")
            for name in (host_name, f"{host_name}.local", socket.getfqdn()):  # .local: its mDNS name
                if name:
                    names.add(name.lower().rstrip("."))
        names.update(h.lower().rstrip(".") for h in allow_hosts if h != "*")
        origins = frozenset(n for n in (_origin_netloc(o) for o in allow_origins) if n)
        return cls(frozenset(names), origins, "*" in allow_hosts)

    def host_refusal(self, headers: Headers) -> str | None:
        raw = headers.get("host")
        if raw is None or self.any_host:
            return None  # HTTP/1.0 without Host: not a browser
        host = _host_name(raw)
        if host is None:
            return f"malformed Host header {raw[:100]!r}"
        if _is_ip(host) or host in self.hosts:
            return None
        return (f"Host {host[:100]!r} is not a name of this service (DNS rebinding guard); "
                "use its address, or start serve with --allow-host NAME")

    def cross_site_refusal(self, headers: Headers) -> str | None:
        origin = headers.get("origin")
        netloc = _origin_netloc(origin) if origin is not None else None
        if netloc is not None and netloc in self.origins:
            return None
        site = headers.get("sec-fetch-site", "").lower()
        if site in ("cross-site", "same-site"):
            return f"a {site} request may not change this service's state (Sec-Fetch-Site); allow its origin with --allow-origin"
        if origin is None:
            return None
        host = headers.get("host", "").strip().lower()
        host_default = host[:-3] if host.endswith(":80") else host
        if netloc is None or netloc not in (host, host_default):
            return f"Origin {origin[:100]!r} is not this service; cross-origin requests may not change its state (--allow-origin to allow one)"
        return None


class RequestGuard:
    """ASGI middleware applying a `SitePolicy` and per-path `BodyRule`s (unknown paths: `default_rule`)."""

    def __init__(self, app: Callable[..., Awaitable[None]], *, policy: SitePolicy, rules: Mapping[str, BodyRule],
                 default_rule: BodyRule, events: EventCounter) -> None:
        self.app = app
        self.policy = policy
        self.rules = dict(rules)
        self.default_rule = default_rule
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        method = scope["method"]
        refusal = self.policy.host_refusal(headers)
        if refusal is not None:
            self.events.note("host_refused", "refused a request for another Host name (DNS rebinding guard)")
            await _answer(scope, receive, send, 400, refusal)
            return
        rule = self.rules.get(scope["path"], self.default_rule)
        if method not in SAFE_METHODS:
            refusal = self.policy.cross_site_refusal(headers)
            if refusal is not None:
                self.events.note("cross_site_refused", "refused a cross-site %s (Origin / Sec-Fetch-Site)", method)
                await _answer(scope, receive, send, 403, refusal)
                return
            ctype = headers.get("content-type")
            media = ctype.split(";")[0].strip().lower() if ctype is not None else None
            if rule.types is not None and media is not None and media not in rule.types:
                await _answer(scope, receive, send, 415, f"Content-Type {media[:100]} is not accepted here; send {' or '.join(sorted(rule.types))}")
                return
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > rule.limit:
            await _answer(scope, receive, send, 413, f"request body of {declared} bytes is larger than the limit of {rule.limit} bytes")
            return
        await self._guarded(scope, receive, send, rule.limit)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        started = False

        async def capped_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, tracked_send)
        except ClientDisconnect:
            self.events.note("client_hung_up", "a client hung up before its request body was read (counted in /api/v1/status)")
        except BodyTooLarge as e:
            if not started:
                await _answer(scope, receive, send, 413, str(e.detail))
        except Exception as e:
            # One line (`Type: message at file:line`); the traceback only with WASTE_EDGE_DEBUG=1 (serve/logs.py).
            self.events.note("internal_error", "internal error on %s %s", scope["method"], scope["path"][:200], level=logging.ERROR, exc_info=e)
            if not started:
                await _answer(scope, receive, send, 500, "internal error (logged by the service)", close=True)


async def _answer(scope: Scope, receive: Receive, send: Send, status: int, detail: str, *, close: bool = False) -> None:
    headers = {"Connection": "close"} if close else None
    await JSONResponse({"detail": detail}, status_code=status, headers=headers)(scope, receive, send)
