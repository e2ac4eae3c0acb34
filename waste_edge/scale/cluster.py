"""Connecting to Ray, and the options every Ray job here shares.

`--ray auto` follows Ray's own rule for `ray.init()` without an address: RAY_ADDRESS, else the cluster the
last `ray start` on this machine recorded, else a local cluster started for this run and stopped after it.
`--ray HOST:PORT` connects to that head node. Whatever address Ray would join (given, RAY_ADDRESS, or the one
`ray start` recorded) is probed first: a TCP connect, then the HTTP/2 handshake every gRPC server (Ray's GCS)
answers at once, each within `PROBE_TIMEOUT_S`. A wrong host, a closed port or a port where something else
listens fails in seconds with one line, instead of Ray's retries, which last minutes and ignore SIGTERM.
A process that already called `ray.init` (a notebook, a test) keeps its connection: the job runs there and the
connection is left open.

While a job runs, everything Ray itself writes to the process's stderr (its C++ core worker's log lines,
raylet messages, Ray Data's tracebacks of failed tasks) goes to a log file instead (`ray_log_path()`), so the
user's terminal shows our progress and one-line errors only; the error line names that file.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

from waste_edge._io import Log, cache_dir, tcp_unreachable
from waste_edge._options import float_in, int_in, option
from waste_edge._outputs import output_folder
from waste_edge.errors import WasteEdgeError

DEFAULT_SHARD_SIZE = 512
PROBE_TIMEOUT_S = 5.0
# The client connection preface of HTTP/2 (RFC 9113, 3.4) and an empty SETTINGS frame: a gRPC server answers
# with a SETTINGS frame of its own before anything else.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_H2_SETTINGS = 0x4


class RayError(WasteEdgeError):
    """Ray is missing, the cluster cannot be reached, or a Ray job failed."""


@dataclass
class RayOptions:
    """How a job runs on Ray. `workers` is the actor pool size (Ray Data's concurrency); each actor reserves
    `cpus_per_worker` CPUs and `gpus_per_worker` GPUs, so Ray places them where those resources are free.

    Ray: --ray alone (or --ray auto) joins the cluster in RAY_ADDRESS or the one `ray start` recorded on this
    machine, else starts a local one for this run; --ray HOST:PORT joins that head node (token auth:
    RAY_AUTH_MODE=token and the cluster's token, as for any Ray client). Inputs and model must be readable at
    the same paths on every node. Results are written in Parquet shards as they complete; after an
    interruption, the same command skips the completed shards."""

    GROUP: ClassVar[tuple[str, str | None]] = ("Ray (pip install 'waste-edge[ray]')", None)

    address: str = option("auto", "--ray", nargs="?", const="auto", metavar="auto|HOST:PORT",
                          help="run on a Ray cluster with Ray Data (see below)")  # auto | local | HOST:PORT | ray://HOST:PORT
    workers: int | None = option(None, "--ray-workers", type=int_in(1, 4096), metavar="N",
                                 help="actor pool size, Ray Data's concurrency (default: the cluster's CPUs / --ray-cpus, or GPUs / --ray-gpus)")
    cpus_per_worker: float = option(1.0, "--ray-cpus", type=float_in(0, 1024, open_lo=True), metavar="N",
                                    help="CPUs reserved per actor, also its model's threads (default: %(default)s)")
    gpus_per_worker: float | None = option(None, "--ray-gpus", type=float_in(0, 1024), metavar="N",
                                           help="GPUs reserved per actor, fractions allowed (default: 1 for CUDA jobs, else 0)")
    shard_size: int = option(DEFAULT_SHARD_SIZE, "--shard-size", type=int_in(1, 1_000_000), metavar="N",
                             help="images per Parquet shard, the unit of resumption (default: %(default)s)")
    shards_dir: Path | None = option(None, "--ray-shards", type=output_folder, metavar="DIR",
                                     help="folder for the shards (default: a folder in the waste-edge cache named after the job)")
    init_kwargs: dict[str, Any] = field(default_factory=dict)  # extra ray.init arguments when a cluster is started here

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise RayError(f"Ray workers must be >= 1, got {self.workers}")
        if self.cpus_per_worker <= 0:
            raise RayError(f"CPUs per Ray worker must be > 0, got {self.cpus_per_worker}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise RayError(f"GPUs per Ray worker must be >= 0, got {self.gpus_per_worker}")
        if self.shard_size < 1:
            raise RayError(f"shard size must be >= 1 image, got {self.shard_size}")

    def worker_threads(self) -> int:
        """Intra-op threads of the model in each actor: the CPUs it reserved (at least one)."""
        return max(1, int(self.cpus_per_worker))


@dataclass(frozen=True)
class ClusterInfo:
    address: str
    cpus: float
    gpus: float
    nodes: int
    started_here: bool

    def describe(self) -> str:
        where = "local Ray cluster started for this run" if self.started_here else f"Ray cluster {self.address}"
        return f"{where}: {self.nodes} node(s), {self.cpus:g} CPUs, {self.gpus:g} GPUs"


def looks_like_ray_address(text: str) -> bool:
    """auto, local, ray://... or HOST:PORT that is not a file here: `predict --ray photos/` puts a source
    where an address may stand, and this tells the two apart."""
    if text in ("auto", "local") or text.startswith("ray://"):
        return True
    return bool(re.fullmatch(r"[\w.\-]+:\d+|\[[0-9a-fA-F:]+\]:\d+", text)) and not Path(text).exists()


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayError("--ray needs Ray Data: pip install 'waste-edge[ray]'") from None
    return ray


def _check_address(address: str, where: str = "") -> None:
    """A HOST:PORT where a Ray head answers, or one line saying why not within seconds (Ray itself retries for
    minutes). `where` says where the address came from (RAY_ADDRESS, `ray start`)."""
    if address.startswith("ray://"):
        hostport = address[len("ray://"):]
    else:
        hostport = address
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise RayError(f"bad Ray address {address!r}{where}: use auto, HOST:PORT (the head node's GCS port, 6379 by default) or ray://HOST:PORT")
    why = tcp_unreachable(host.strip("[]"), int(port), timeout=PROBE_TIMEOUT_S) or grpc_unanswered(host.strip("[]"), int(port), PROBE_TIMEOUT_S)
    if why:
        raise RayError(f"no Ray cluster answers at {address}{where} ({why}); start one with `ray start --head` or use --ray auto")


def grpc_unanswered(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when an HTTP/2 (gRPC) server answers the connection preface at host:port within `timeout`, else why not:
    something that accepts TCP but is not a Ray head (a web server, a dead head's port reused) fails here."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_H2_PREFACE)
            head = b""
            while len(head) < 9:  # the first frame's header: length (3), type (1), flags (1), stream (4)
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    return "the connection was closed without an HTTP/2 answer: not a Ray head node"
                head += chunk
    except socket.timeout:
        return f"no HTTP/2 answer within {timeout:g} s: not a Ray head node"
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    return None if head[3] == _H2_SETTINGS else "the answer is not HTTP/2: not a Ray head node"


def _address_ray_would_join() -> tuple[str, str] | None:
    """(address, where it came from) that `ray.init()` without an address would join: RAY_ADDRESS, else the cluster
    `ray start` recorded on this machine; None when Ray would start a local cluster (or its private helper moved)."""
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env:
        return (env, " (from RAY_ADDRESS)") if env not in ("auto", "local") else None
    try:
        from ray._private.services import find_bootstrap_address

        recorded = find_bootstrap_address(None)
    except Exception:
        return None
    return (str(recorded), " (the cluster `ray start` recorded on this machine)") if recorded else None


def ray_log_path() -> Path:
    """Where Ray's own output of the latest job goes (`ray_cluster`): in the waste-edge cache, overwritten per job."""
    return cache_dir("scale", "ray-output.log")


def quiet_ray_data() -> None:
    """Our tqdm bar counts images; Ray Data's own bars count blocks and its INFO lines describe its plan."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for name in ("ray.data", "ray.data._internal.progress"):
        logging.getLogger(name).setLevel(logging.ERROR)


class _ThreadRouted:
    """A text stream that writes for Ray's own threads (`ray_listen_error_messages` prints worker tracebacks to
    sys.stdout, `ray_print_logs`) into the log and for every other thread to the terminal stream."""

    def __init__(self, terminal: Any, log: Any) -> None:
        self._terminal, self._log = terminal, log

    def _target(self) -> Any:
        import threading

        return self._log if threading.current_thread().name.startswith("ray_") else self._terminal

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ...: the terminal's
        return getattr(self._terminal, name)


@contextmanager
def ray_output_to_log(path: Path) -> Iterator[Any]:
    """Inside the block, what Ray writes goes to `path`: file descriptor 2 (its C++ core worker's log lines), what
    its threads print to sys.stdout / sys.stderr, and its Python loggers (`route_ray_loggers`, once ray.init set
    them up). Our own progress bar, log lines and warnings stay on the terminal. Yields the log stream."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(path, "w", encoding="utf-8", errors="backslashreplace", buffering=1)
    except OSError:
        yield None
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded, captured): Python-level routing only
        saved = None
    previous_out, previous_err = sys.stdout, sys.stderr
    terminal_err = (os.fdopen(saved, "w", buffering=1, encoding=getattr(previous_err, "encoding", None) or "utf-8",
                              errors="backslashreplace") if saved is not None else previous_err)
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is previous_err]
    if saved is not None:
        os.dup2(log_file.fileno(), 2)
    routed_out, routed_err = _ThreadRouted(previous_out, log_file), _ThreadRouted(terminal_err, log_file)
    sys.stdout, sys.stderr = routed_out, routed_err
    for h in handlers:  # our own warnings (the CLI's root handler) stay visible
        h.setStream(terminal_err)
    ray_logger = logging.getLogger("ray")
    propagate = ray_logger.propagate
    try:
        yield log_file
    finally:
        sys.stdout, sys.stderr = previous_out, previous_err
        # Whatever kept a reference to the routed streams (Ray's handlers, a progress bar) writes where it used to.
        routed_out._terminal = routed_out._log = previous_out
        routed_err._terminal = routed_err._log = previous_err
        for h in handlers + _ray_stream_handlers():
            if h.stream in (terminal_err, log_file, routed_err):
                _set_stream(h, previous_err)
        ray_logger.propagate = propagate
        if saved is not None:
            try:
                terminal_err.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            terminal_err.close()
        log_file.close()


def _ray_stream_handlers() -> list[logging.StreamHandler]:
    """The terminal-bound handlers ray.init put on Ray's loggers (plain StreamHandlers and Ray's own classes):
    routed into the job's log, and back after it. Handlers others put there (pytest's log capture) are theirs."""
    names = [n for n in list(logging.root.manager.loggerDict) if n == "ray" or n.startswith("ray.")]
    return [h for n in names for h in logging.getLogger(n).handlers
            if type(h) is logging.StreamHandler or (isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                                                   and type(h).__module__.partition(".")[0] == "ray")]


def _set_stream(handler: logging.StreamHandler, stream: Any) -> None:
    """`setStream` flushes the old stream first, which raises if that stream was closed (a finished job's log, a
    test's captured stderr): a handler is re-pointed whatever state its old stream is in."""
    try:
        handler.setStream(stream)
    except (OSError, ValueError):
        handler.stream = stream


def route_ray_loggers(log_file: Any) -> None:
    """Ray's Python loggers (set up by ray.init) write to `log_file` and not through our handlers."""
    if log_file is None:
        return
    for h in _ray_stream_handlers():
        _set_stream(h, log_file)
    logging.getLogger("ray").propagate = False


@contextmanager
def ray_cluster(options: RayOptions, log: Log | None = None) -> Iterator[ClusterInfo]:
    """Connect (or start a local cluster) for the duration of one job; reuse a connection the caller made."""
    ray = import_ray()
    if ray.is_initialized():
        quiet_ray_data()
        yield _cluster_info(ray, False, log)
        return
    address: str | None = options.address
    if address in (None, "", "auto"):
        address = None
        joined = _address_ray_would_join()
        if joined is not None:
            _check_address(*joined)
    elif address != "local":
        _check_address(address)
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    # Worker and raylet log lines would tear the progress bar; they stay in the session log folder, and an
    # actor that fails still raises here with its traceback.
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, configure_logging=True, log_to_driver=False)
    kwargs.update(options.init_kwargs)
    with ray_output_to_log(ray_log_path()) as ray_log:
        try:
            ctx = ray.init(address=address, **kwargs)
            route_ray_loggers(ray_log)
        except ValueError as e:
            raise RayError(f"cannot start or join a Ray cluster: {e}") from None
        except Exception as e:  # ConnectionError, AuthenticationError, RuntimeError: all one line to the user
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            hint = ""
            if "auth" in str(e).lower():
                hint = " (token authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or ~/.ray/auth_token, as for any Ray client)"
            raise RayError(f"cannot connect to Ray at {options.address}: {first}{hint}") from None
        try:
            quiet_ray_data()
            yield _cluster_info(ray, address in (None, "local") and _started_locally(ctx), log)
        finally:
            ray.shutdown()


def _cluster_info(ray: Any, started_here: bool, log: Log | None) -> ClusterInfo:
    res = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    info = ClusterInfo(address=str(ray.get_runtime_context().gcs_address), cpus=float(res.get("CPU", 0.0)),
                       gpus=float(res.get("GPU", 0.0)), nodes=nodes, started_here=started_here)
    if log:
        log(info.describe())
    return info


def _started_locally(ctx: Any) -> bool:
    """Whether ray.init started the cluster (a head node of its own) rather than joining one that runs."""
    try:
        import ray._private.worker as worker

        return bool(worker._global_node.head)
    except Exception:  # a private attribute: if it moves, say "Ray cluster <address>" rather than fail
        return False


def pool_size(options: RayOptions, info: ClusterInfo, gpus_per_worker: float, units: int) -> int:
    """Actors to start: `--ray-workers`, else what the cluster's CPUs (or GPUs) hold; never more than the work."""
    if options.workers is not None:
        n = options.workers
    elif gpus_per_worker > 0:
        n = int(info.gpus // gpus_per_worker)
    else:
        n = int(info.cpus // options.cpus_per_worker)
    if gpus_per_worker > 0 and info.gpus < gpus_per_worker:
        raise RayError(f"the Ray cluster has {info.gpus:g} GPUs; each worker asks for {gpus_per_worker:g}")
    return max(1, min(n if n > 0 else 1, max(1, units)))


def compute_strategy(size: int) -> Any:
    """A fixed actor pool of `size` (Ray Data's `concurrency=size` in the API it replaced)."""
    import ray.data

    return ray.data.ActorPoolStrategy(size=size)


def blocks_for(units: int, workers: int) -> int:
    """Input blocks: small enough that every actor gets work and progress is smooth, few enough to stay cheap."""
    return max(1, min(units, max(workers * 8, math.ceil(units / 4)), 2000))
