"""Every limit the service puts on HTTP clients, in one frozen snapshot (the `serve --max-* / --*-timeout` flags).

`serve` runs for months on a network: every request is hostile until proven otherwise. Bodies are capped per
route (classify's photo by `ServeConfig.max_body_bytes` / `max_pixels`, the rest here), connections have deadlines for their request head and body and for a response nobody reads, and the
number of open connections is capped (the open-file limit is raised to fit it). The defaults are safe for a
bin-side computer on a LAN; each is a flag, shown in `serve --help`.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# asyncio's listen backlog and the most connections it accepts per wake-up, before any of them is counted by the
# connection cap (uvicorn passes its `backlog` to both): the cap can be overshot by this much. Smaller drops SYNs
# under a burst (1,100 connects took 15 s at 64, 0.3 s at 512).
ACCEPT_BURST = 512
# Descriptors beyond the connections: that overshoot, model files, cameras, logs, JSONL, MQTT, ONNX Runtime.
FD_RESERVE = ACCEPT_BURST + 128


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int = 500  # open HTTP connections; beyond, the longest-idle one is closed (streams are kept)
    header_timeout_s: float = 10.0  # a connection must send a whole request head this soon (after connect or a response)
    body_timeout_s: float = 60.0  # ... and the whole body this soon after the head
    send_timeout_s: float = 30.0  # a response (MJPEG, SSE, JSON) nobody reads for this long closes its connection
    keep_alive_s: float = 5.0  # idle keep-alive connections are closed after this
    max_json_bytes: int = 1 * MIB  # every JSON body (labels, adapt, model by name) and any other request body
    max_model_bytes: int = 512 * MIB  # POST /api/v1/model upload
    max_header_bytes: int = 16 * 1024  # request line + headers (h11's own default)
    keep_models: int = 10  # adapted / uploaded models kept in the models folder (older ones deleted unless serving)


@dataclass(frozen=True)
class HttpOptions:
    """Everything of `serve` about HTTP clients besides routes: limits, and the names the service answers to."""

    limits: HttpLimits = HttpLimits()
    allow_hosts: tuple[str, ...] = ()  # --allow-host: more Host names (DNS rebinding guard); "*" any
    allow_origins: tuple[str, ...] = ()  # --allow-origin: other sites allowed to POST (a dashboard)


def raise_fd_limit(limits: HttpLimits) -> HttpLimits:
    """Raise the soft open-file limit so `max_connections` fits (a hard limit below it lowers the cap, said once).

    At 1,024 descriptors (a common default) 1,100 idle connections used to exhaust them: accept() failed in a loop,
    /healthz stopped answering and asyncio logged a traceback per attempt."""
    need = limits.max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < need:
        fit = max(16, soft - FD_RESERVE)
        log.warning("open-file limit is %d: --max-connections lowered from %d to %d (raise `ulimit -n` for more)", soft, limits.max_connections, fit)
        return HttpLimits(**{**limits.__dict__, "max_connections": fit})
    return limits

