"""Every limit the service puts on HTTP clients, in one frozen snapshot (the `serve --max-* / --*-timeout` flags).

`serve` runs for months on a network: every request is hostile until proven otherwise. Bodies are capped per
route (classify's photo by `ServeConfig.max_body_bytes` / `max_pixels`, the rest here), connections have deadlines for their request head and body and for a response nobody reads, and the
number of open connections is capped (the open-file limit is raised to fit it). The defaults are safe for a
bin-side computer on a LAN; each is a flag, shown in `serve --help`.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import ClassVar

from waste_edge._options import float_in, int_in, option
from waste_edge._outputs import input_path, output_folder

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


_D = HttpLimits()


@dataclass(frozen=True)
class AccessOptions:
    """Who may call the service and how much a client may take: token, names, models folder, every HTTP limit
    (the "access and limits" group of `serve`; `resolve()` turns it into the token and `HttpOptions`)."""

    GROUP: ClassVar[tuple[str, str | None]] = ("access and limits (every HTTP request is treated as hostile; over a limit: 4xx, connection closed)", None)

    token_file: Path | None = option(None, "--token-file", type=input_path, metavar="PATH",
                                     help="require 'Authorization: Bearer TOKEN' on every API and stream route, TOKEN read from this file "
                                          "(one line; chmod 600); or set WASTE_EDGE_TOKEN in the environment")
    token: str | None = option(None, "--token", help="the token on the command line: visible to every local user in ps; prefer --token-file")
    models_dir: Path | None = option(None, "--models-dir", type=output_folder, metavar="DIR",
                                     help="the models POST /api/v1/model may serve (by name or sha256, or uploaded there) and where "
                                          "POST /api/v1/adapt writes (default: COLLECT/models with --collect; none otherwise)")
    allow_hosts: list[str] = option(MISSING, "--allow-host", default_factory=list, action="append", metavar="NAME",
                                    help="another Host name clients use for this service (default: IP addresses, localhost and, beyond "
                                         "loopback, this machine's names); '*' accepts any (a proxy checks names)")
    allow_origins: list[str] = option(MISSING, "--allow-origin", default_factory=list, action="append", metavar="URL",
                                      help="another site allowed to POST (e.g. https://dashboard.lan); others are refused 403")
    max_connections: int = option(_D.max_connections, "--max-connections", type=int_in(16, 100_000), metavar="N",
                                  help="open HTTP connections; beyond, the longest idle is closed (default: %(default)s)")
    header_timeout: float = option(_D.header_timeout_s, "--header-timeout", type=float_in(0.0, 3600.0, open_lo=True), metavar="S",
                                   help="seconds for a whole request head (default: %(default)s)")
    body_timeout: float = option(_D.body_timeout_s, "--body-timeout", type=float_in(0.0, 86_400.0, open_lo=True), metavar="S",
                                 help="seconds for a whole request body (default: %(default)s)")
    send_timeout: float = option(_D.send_timeout_s, "--send-timeout", type=float_in(0.0, 3600.0, open_lo=True), metavar="S",
                                 help="seconds a client may read nothing of a response (MJPEG, SSE) before it is cut (default: %(default)s)")
    keep_alive: float = option(_D.keep_alive_s, "--keep-alive", type=float_in(1.0, 3600.0), metavar="S",
                               help="seconds an idle keep-alive connection stays open (default: %(default)s)")
    max_json_kb: float = option(_D.max_json_bytes / 1024, "--max-json-kb", type=float_in(0.0, 65_536.0, open_lo=True), metavar="KB",
                                help="largest JSON body (labels, adapt, model choice) and any other body (default: %(default)s)")
    max_model_mb: float = option(_D.max_model_bytes / MIB, "--max-model-mb", type=float_in(0.0, 8192.0, open_lo=True), metavar="MB",
                                 help="largest model upload to POST /api/v1/model (default: %(default)s)")
    keep_models: int = option(_D.keep_models, "--keep-models", type=int_in(1, 10_000), metavar="N",
                              help="models the service made (adapted, uploaded) kept in the models folder; older ones are deleted "
                                   "unless serving (default: %(default)s)")

    def resolve(self) -> tuple[str | None, HttpOptions, list[str]]:
        """(token, HttpOptions, warnings to print); a one-line error for a token that cannot be used."""
        from waste_edge.serve.auth import resolve_token

        token, warnings = resolve_token(self.token, self.token_file)
        limits = HttpLimits(max_connections=self.max_connections, header_timeout_s=self.header_timeout, body_timeout_s=self.body_timeout,
                            send_timeout_s=self.send_timeout, keep_alive_s=self.keep_alive, max_json_bytes=int(self.max_json_kb * 1024),
                            max_model_bytes=int(self.max_model_mb * MIB), keep_models=self.keep_models)
        return token, HttpOptions(limits, tuple(self.allow_hosts), tuple(self.allow_origins)), warnings


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

