"""Run the service under uvicorn in this process, and end it cleanly on SIGTERM / SIGINT (exit 0).

uvicorn's own signal handling re-raises the signal after its shutdown (the process then dies by it, exit
status 143 for SIGTERM) and waits for streaming responses (MJPEG, SSE) that never end by themselves.
`_Server` therefore (1) sets the service's `stopping` flag as soon as the signal arrives, which ends those
streams within a poll interval, (2) lets uvicorn close connections, and (3) does not re-raise, so that
`run_server` can stop the cameras, flush JSONL / video / MQTT and return 0. A second Ctrl-C forces exit.

HTTP runs on uvicorn's h11 protocol with `connections.GuardedH11Protocol` (head / body deadlines, stalled writes,
a connection cap; the open-file limit is raised to fit it), behind `request_guard.RequestGuard` (Host, cross-site,
body limits); the log passes through `logs.OneLineLog` (one line per event kind, rate-limited).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import os
import platform
import signal
import socket
import sys
import threading
from typing import Callable, Iterator, TextIO

from waste_edge.errors import WasteEdgeError
from waste_edge.serve.config import ServeConfig
from waste_edge.serve.service import Service

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> str:
    """Cap glibc's malloc arenas for this process (unless MALLOC_ARENA_MAX is set); returns what was done.

    glibc gives threads that allocate at the same time their own arenas, up to 8 per core, and keeps what they
    free for reuse inside each arena. The service's threads come and go (the thread pool of sync routes, the
    classify pool, ONNX Runtime's), each leaving a fragmented arena behind: a 3-minute soak (2 cameras, 10
    classify and 52 stream clients) grew RSS 215 -> 283 MB and still climbing; with 2 arenas 215 -> 230 MB and
    flat (benchmarks/serve_soak.py). `mallopt(M_ARENA_MAX)` at run time works until glibc fixes its own limit
    (when a ninth arena would be made), so it runs first thing, before the model, the cameras and the HTTP threads."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return f"MALLOC_ARENA_MAX={os.environ['MALLOC_ARENA_MAX']} (environment)"
    if platform.libc_ver()[0] != "glibc":
        return "untouched (not glibc)"
    try:
        ok = ctypes.CDLL(None).mallopt(_M_ARENA_MAX, int(arenas))
    except (OSError, AttributeError):
        ok = 0
    return f"glibc, {arenas} malloc arenas" if ok == 1 else "untouched (mallopt refused)"


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket (port 0: a free port, printed at start), or a one-line error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise WasteEdgeError(f"--host {host}: {e.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise WasteEdgeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _server_class():  # uvicorn is imported only when serving
    import uvicorn

    class _Server(uvicorn.Server):
        on_signal: Callable[[int], None] = lambda self, sig: None  # noqa: E731

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self._handle) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        def _handle(self, sig: int, frame: object) -> None:
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True
            self.on_signal(sig)

    return _Server


def run_server(config: ServeConfig, *, out: TextIO = sys.stdout) -> int:
    """Serve until SIGTERM / SIGINT; returns the exit status (0 after a clean stop)."""
    import uvicorn

    from waste_edge.serve.app import create_app
    from waste_edge.serve.connections import ConnectionGuard, guarded_protocol
    from waste_edge.serve.limits import ACCEPT_BURST, raise_fd_limit
    from waste_edge.serve.logs import EventCounter, install
    from waste_edge.serve.request_guard import SitePolicy

    install()  # every record one line, rate-limited: no client can fill the disk through the log
    allocator = limit_malloc_arenas()  # before the model, cameras and HTTP threads allocate: RSS stays flat for months
    if not config.token and not is_loopback(config.host):
        print(f"warning: listening on {config.host} without a token: anyone who can reach this port can read the cameras "
              "and use the API; pass --token-file (or WASTE_EDGE_TOKEN) or keep --host 127.0.0.1", file=sys.stderr, flush=True)
    sock = bind_socket(config.host, config.port)
    try:
        service = Service(config)
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"model: {service.holder.current.description} sha256 {service.holder.current.sha256[:12]}", file=out, flush=True)
    log.info("allocator: %s", allocator)
    for w in service.workers.values():
        print(f"camera {w.id}: {w.spec}", file=out, flush=True)
    if config.mqtt:
        assert service.mqtt is not None
        print(f"mqtt: {service.mqtt.target.redacted} (topics {service.mqtt.target.prefix}/...)", file=out, flush=True)
    if service.discovery is not None:
        d = service.discovery
        print(f"mqtt discovery: {d.prefix}/sensor/{d.node_id}/... ({len(d.configs)} entities for Home Assistant)", file=out, flush=True)
    if service.actions.hook is not None:
        print(f"on-decision: {service.actions.hook.command} (timeout {service.actions.hook.timeout:g} s)", file=out, flush=True)
    for w in service.actions.webhooks:
        print(f"webhook: {w.redacted}" + (f" (signed, secret from {w.secret.source})" if w.secret else ""), file=out, flush=True)
    limits = raise_fd_limit(config.http.limits)
    events = EventCounter(logging.getLogger("waste_edge.serve.http"))
    guard = ConnectionGuard(limits, events)
    policy = SitePolicy.for_bind(config.host, config.http.allow_hosts, config.http.allow_origins)
    app = create_app(service, config.token, policy=policy, limits=limits, events=events)
    app.state.connections = guard
    service.start()
    server_cls = _server_class()
    # log_config=None: uvicorn's loggers reach the root handler and its OneLineLog; ws="none": no WebSocket routes.
    uv_config = uvicorn.Config(app, http=guarded_protocol(guard), ws="none", log_config=None, log_level="warning", access_log=False,
                               lifespan="off", timeout_graceful_shutdown=5, timeout_keep_alive=max(1, int(limits.keep_alive_s)),
                               h11_max_incomplete_event_size=limits.max_header_bytes, server_header=False,
                               backlog=ACCEPT_BURST)  # see limits.ACCEPT_BURST
    server = server_cls(uv_config)
    stop_reason: list[str] = []

    def on_signal(sig: int) -> None:
        stop_reason.append(signal.Signals(sig).name)
        service.stopping.set()  # ends the MJPEG / SSE streams, so uvicorn's shutdown does not wait for them

    server.on_signal = on_signal
    print(f"serving on http://{shown}:{port} (Ctrl-C or SIGTERM to stop)", file=out, flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        service.stop()
        sock.close()
    frames = ", ".join(f"{cam.id} {cam.counters.frames} frames" for cam in service.snapshot().cameras)
    print(f"stopped ({stop_reason[0] if stop_reason else 'server exited'})" + (f": {frames}" if frames else ""), file=out, flush=True)
    actions = service.actions.status()
    for line in ([actions.on_decision.summary()] if actions.on_decision else []) + [w.summary() for w in actions.webhooks]:
        print(line, file=out, flush=True)
    for line in service.losses():  # said when it happened, in /api/v1/status, and here once more
        print(f"lost: {line}", file=out, flush=True)
    return 0
