"""`--webhook URL`: POST every decision change to an HTTP endpoint (Node-RED, n8n, Home Assistant webhooks, a PLC gateway).

The body is the `waste-edge.decision/1` JSON of the MQTT `decision` topic, byte for byte the same schema
(`runtime/decision_event.py`); `seq` counts the messages of this process to THIS URL, so a receiver sees a
gap exactly where a message was dropped. Any 2xx answer means delivered. Headers:

  Content-Type: application/json
  User-Agent: waste-edge/VERSION
  X-Waste-Edge-Delivery: a UUID per message, the same on every retry (a receiver drops duplicates by it:
                         delivery is at least once, e.g. when a slow receiver answers after our timeout)
  X-Waste-Edge-Signature: t=UNIX_SECONDS,v1=HEX   (only with a secret, see below)

Signing (like Stripe's and GitHub's webhooks): with a secret (`--webhook-secret-file FILE` or the
environment variable WASTE_EDGE_WEBHOOK_SECRET, never a command-line value), `v1` is the hex HMAC-SHA256,
keyed by the secret, of the ASCII bytes of `t`, a ".", then the raw body. `t` is the time of the attempt,
so a receiver that rejects signatures older than a few minutes (`verify_signature`, default 300 s) stops
replays; every retry is signed afresh. The receiver compares in constant time (`hmac.compare_digest`).

Delivery: one sender thread per URL (a slow receiver delays only itself) takes the oldest message from a
bounded queue and POSTs it with a timeout. Connection errors, timeouts, 408, 425, 429 and 5xx are retried
with exponential back-off (0.5 s doubling to 30 s, or the receiver's Retry-After up to 30 s), at most
`attempts` tries; another 4xx or a redirect (3xx, never followed: it would turn the POST into a GET) is
final and counted as `failed`, as is a message that used up its attempts. The queue follows MQTT's rule:
when it is full, the OLDEST waiting message is dropped and counted (`dropped`); a message being retried is
the oldest, so a long outage leaves the newest `queue_size` decisions, not stale ones.

Accounting: every message offered is delivered, dropped, failed or unsent (still queued when the service
stopped and `close` ran out of time), or still queued / in flight: the counters always add up.

urllib from the standard library, not a third-party client: the [serve] extra stays as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit, urlunsplit

from waste_edge import __version__
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.decision_event import DecisionEvent

log = logging.getLogger(__name__)

SECRET_ENV = "WASTE_EDGE_WEBHOOK_SECRET"
SIGNATURE_HEADER = "X-Waste-Edge-Signature"
DELIVERY_HEADER = "X-Waste-Edge-Delivery"
RETRY_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))


@dataclass(frozen=True)
class WebhookSecret:
    value: bytes = field(repr=False)  # never printed, never logged
    source: str  # "file PATH" or "environment WASTE_EDGE_WEBHOOK_SECRET"


def load_secret(path: Path | str | None, environ: Mapping[str, str] = os.environ) -> WebhookSecret | None:
    """The signing secret from FILE (trailing newline stripped), else from WASTE_EDGE_WEBHOOK_SECRET, else None."""
    if path is not None:
        try:
            raw = Path(path).read_bytes()
        except OSError as e:
            raise WasteEdgeError(f"--webhook-secret-file {path}: {e.strerror or e}") from None
        value, source = raw.strip(b"\r\n"), f"file {path}"
        try:
            if Path(path).stat().st_mode & 0o077:
                log.warning("webhook secret file %s is readable by other users (chmod 600 it)", path)
        except OSError:
            pass
    elif environ.get(SECRET_ENV):
        value, source = environ[SECRET_ENV].encode(), f"environment {SECRET_ENV}"
    else:
        return None
    if not value:
        raise WasteEdgeError(f"webhook secret from {source} is empty")
    return WebhookSecret(value, source)


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The X-Waste-Edge-Signature value: t=TIMESTAMP,v1=hex(HMAC-SHA256(secret, b"TIMESTAMP." + body))."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: bytes, header: str, body: bytes, *, tolerance_s: float = 300.0, now: float | None = None) -> bool:
    """What a receiver runs: the signature matches the body and its timestamp is within `tolerance_s` of now."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        ts = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    expected = sign(secret, body, ts).split(",v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def redact_url(url: str) -> str:
    """scheme://host:port/path, without user:password and with the query hidden (either may carry a token)."""
    p = urlsplit(url)
    host = p.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if p.port:
        netloc += f":{p.port}"
    return urlunsplit((p.scheme, netloc, p.path, "..." if p.query else "", ""))


def check_webhook_url(url: str) -> str:
    p = urlsplit(url)
    if p.scheme not in ("http", "https") or not p.hostname:
        raise WasteEdgeError(f"--webhook {redact_url(url) or url!r}: expected http://HOST[:PORT]/PATH or https://...")
    try:
        p.port
    except ValueError:
        raise WasteEdgeError(f"--webhook {redact_url(url)}: bad port") from None
    if p.fragment:
        raise WasteEdgeError(f"--webhook {redact_url(url)}: a URL fragment (#...) is never sent; remove it")
    return url


@dataclass(frozen=True)
class WebhookStatus:
    url: str  # redacted
    signed: bool
    queue_size: int
    queued: int
    in_flight: bool
    offered: int
    delivered: int
    retries: int  # attempts after a message's first
    dropped: int  # oldest dropped from the full queue
    failed: int  # refused (4xx, redirect) or out of attempts
    unsent: int  # still queued when the service stopped
    last_status: int | None  # HTTP status of the last attempt (None: no answer)
    last_error: str
    up: bool  # the last attempt was delivered

    def summary(self) -> str:
        return (f"webhook {self.url}: {self.offered} messages: {self.delivered} delivered, {self.dropped} dropped (queue full), "
                f"{self.failed} failed, {self.unsent} unsent at exit; {self.retries} retries")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None  # a 3xx becomes an HTTPError: a final failure, never a silent POST-turned-GET


@dataclass
class _Message:
    body: bytes
    delivery: str
    attempts: int = 0


class WebhookSender:
    """The decision sink of one --webhook URL (see the module docstring)."""

    def __init__(self, url: str, *, secret: WebhookSecret | None = None, queue_size: int = 1000, timeout: float = 5.0,
                 attempts: int = 10, backoff: tuple[float, float] = (0.5, 30.0)) -> None:
        self.url = check_webhook_url(url)
        self.redacted = redact_url(url)
        self.secret = secret
        self.queue_size = max(1, int(queue_size))
        self.timeout = float(timeout)
        self.attempts = max(1, int(attempts))
        self.backoff = backoff
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._queue: deque[_Message] = deque()
        self._in_flight: _Message | None = None
        self._cond = threading.Condition()
        self._closing = self._abort = self._final = False
        self._seq = 0
        self._n = dict.fromkeys(("delivered", "retries", "dropped", "failed", "unsent"), 0)
        self._last_status: int | None = None
        self._last_error = ""
        self._up = True  # until the first failure: an outage is logged when it starts and when it ends
        self._logged_kinds: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name=f"waste-edge webhook {self.redacted}", daemon=True)
        self._thread.start()

    # -- the sink --------------------------------------------------------------------------------------------

    def on_decision(self, event: DecisionEvent) -> None:
        with self._cond:
            self._seq += 1
            body = json.dumps(event.doc(self._seq), separators=(",", ":")).encode()
            if self._closing:
                self._n["unsent"] += 1
                return
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self._n["dropped"] += 1
            self._queue.append(_Message(body, str(uuid.uuid4())))
            self._cond.notify_all()

    def status(self) -> WebhookStatus:
        with self._cond:
            return WebhookStatus(self.redacted, self.secret is not None, self.queue_size, len(self._queue), self._in_flight is not None,
                                 self._seq, last_status=self._last_status, last_error=self._last_error, up=self._up, **self._n)

    def close(self, timeout: float = 5.0) -> None:
        """Keep delivering (and retrying) what is queued for up to `timeout` s, then count the rest as unsent."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while (self._queue or self._in_flight) and time.monotonic() < deadline:
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            self._abort = True
            self._cond.notify_all()
        self._thread.join(self.timeout + 1.0)  # an attempt in flight ends within its own timeout
        with self._cond:
            self._final = True  # an attempt that is still hanging no longer changes the counts
            left = len(self._queue) + (1 if self._in_flight is not None else 0)
            self._n["unsent"] += left
            self._queue.clear()
            self._in_flight = None
        if left:
            log.warning("webhook %s: %d message(s) not delivered at exit (%s)", self.redacted, left, self._last_error or "receiver slow")

    # -- the sender thread -----------------------------------------------------------------------------------

    def _loop(self) -> None:
        delay = self.backoff[0]
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._abort or not self._queue:
                    return
                msg = self._in_flight = self._queue.popleft()
            msg.attempts += 1
            status, error, retry_after = self._post(msg)
            with self._cond:
                if self._final:
                    return
                self._in_flight = None
                self._last_status, self._last_error = status, error
                if not error:
                    self._n["delivered"] += 1
                    if not self._up:
                        log.info("webhook %s: delivering again", self.redacted)
                    self._up, delay = True, self.backoff[0]
                    self._cond.notify_all()
                    continue
                retry = status is None or status in RETRY_STATUSES
                was_up, self._up = self._up, False
                if not retry or msg.attempts >= self.attempts:
                    self._n["failed"] += 1
                    kind = f"gave up ({'refused' if not retry else 'attempts'})"
                    if kind not in self._logged_kinds:
                        self._logged_kinds.add(kind)
                        log.warning("webhook %s: gave up on a message after %d attempt(s): %s (further ones are counted as failed)",
                                    self.redacted, msg.attempts, error)
                    self._cond.notify_all()
                    continue
                self._n["retries"] += 1
                if len(self._queue) >= self.queue_size:  # the message being retried is the oldest: it goes first
                    self._n["dropped"] += 1
                else:
                    self._queue.appendleft(msg)
                if was_up:
                    log.warning("webhook %s: %s; retrying with back-off, queueing up to %d messages", self.redacted, error, self.queue_size)
                wait = min(self.backoff[1], max(delay, retry_after or 0.0))
                delay = min(self.backoff[1], delay * 2)
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._abort, timeout=wait)

    def _post(self, msg: _Message) -> tuple[int | None, str, float | None]:
        """One attempt: (HTTP status or None, error text or "" when delivered, Retry-After seconds or None)."""
        headers = {"Content-Type": "application/json", "User-Agent": f"waste-edge/{__version__}", DELIVERY_HEADER: msg.delivery}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret.value, msg.body, int(time.time()))
        req = urllib.request.Request(self.url, data=msg.body, headers=headers, method="POST")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:  # the answer's body is never read: nothing to bound
                status = resp.status
        except urllib.error.HTTPError as e:
            retry_after = e.headers.get("Retry-After", "") if e.headers else ""
            e.close()
            return e.code, f"HTTP {e.code} {e.reason}", float(retry_after) if retry_after.isdigit() else None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (TimeoutError, socket.timeout)):
                return None, f"no answer within {self.timeout:g} s", None
            return None, f"cannot connect: {getattr(e.reason, 'strerror', None) or e.reason}", None
        except (TimeoutError, socket.timeout):
            return None, f"no answer within {self.timeout:g} s", None
        except (OSError, http.client.HTTPException) as e:
            return None, f"{type(e).__name__}: {e}", None
        if 200 <= status < 300:
            return status, "", None
        return status, f"HTTP {status}", None  # 1xx / other non-2xx that urllib did not raise
