"""A real HTTP webhook receiver on 127.0.0.1 for the tests: it answers as told (`script`), records every request.

`script` is a list of behaviours used in turn, the last one repeating: an int is the status to answer,
("slow", SECONDS) answers 200 after SECONDS. Bodies are read up to Content-Length, at most 1 MB.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered (or would have, for a slow answer the client gave up on)

    @property
    def doc(self) -> dict:
        return json.loads(self.body)


class Receiver:
    def __init__(self, script: list | None = None, port: int = 0) -> None:
        self.script = list(script or [200])
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(min(length, MAX_BODY))
                with owner.lock:
                    step = owner.script[min(len(owner.requests), len(owner.script) - 1)]
                    status = 200 if isinstance(step, tuple) else int(step)
                    owner.requests.append(Received(self.path, dict(self.headers.items()), body, status))
                if isinstance(step, tuple):
                    time.sleep(step[1])
                self.send_response(status)
                if status in (301, 302, 307, 308):
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST  # a followed redirect would show up as a GET here

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    def delivered_docs(self) -> list[dict]:
        """Bodies answered with 2xx, one per delivery id (a retry after a timeout can bring a message twice)."""
        seen, out = set(), []
        for r in self.received():
            if 200 <= r.status < 300 and r.headers.get("X-Waste-Edge-Delivery") not in seen:
                seen.add(r.headers.get("X-Waste-Edge-Delivery"))
                out.append(r.doc)
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
