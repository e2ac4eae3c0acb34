"""Run the service under uvicorn in this process, and end it cleanly on SIGTERM / SIGINT (exit 0).

uvicorn's own signal handling re-raises the signal after its shutdown (the process then dies by it, exit
status 143 for SIGTERM) and waits for streaming responses (MJPEG, SSE) that never end by themselves.
`_Server` therefore (1) sets the service's `stopping` flag as soon as the signal arrives, which ends those
streams within a poll interval, (2) lets uvicorn close connections, and (3) does not re-raise, so that
`run_server` can stop the cameras, flush JSONL / video / MQTT and return 0. A second Ctrl-C forces exit.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
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

    if not config.token and not is_loopback(config.host):
        print(f"warning: listening on {config.host} without --token: anyone who can reach this port can read the cameras "
              "and use the API; pass --token or keep --host 127.0.0.1", file=sys.stderr, flush=True)
    sock = bind_socket(config.host, config.port)
    try:
        service = Service(config)
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"model: {service.holder.current.description} sha256 {service.holder.current.sha256[:12]}", file=out, flush=True)
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
    service.start()
    server_cls = _server_class()
    uv_config = uvicorn.Config(create_app(service, config.token), log_level="warning", access_log=False, lifespan="off",
                               timeout_graceful_shutdown=5, timeout_keep_alive=5)
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
    return 0
