"""Connecting to Ray, and the options every Ray job here shares.

`--ray auto` follows Ray's own rule for `ray.init()` without an address: RAY_ADDRESS, else the cluster the
last `ray start` on this machine recorded, else a local cluster started for this run and stopped after it.
`--ray HOST:PORT` connects to that head node; it is probed first, so a wrong address fails in seconds with
one line instead of Ray's minute of retries. A process that already called `ray.init` (a notebook, a test)
keeps its connection: the job runs there and the connection is left open.
"""

from __future__ import annotations

import logging
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator

from waste_edge._io import Log, tcp_unreachable
from waste_edge._options import float_in, int_in, option
from waste_edge._outputs import output_folder
from waste_edge.errors import WasteEdgeError

DEFAULT_SHARD_SIZE = 512


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


def _check_address(address: str) -> None:
    """A HOST:PORT that answers, or one line saying why not (Ray itself retries for about a minute)."""
    if address.startswith("ray://"):
        hostport = address[len("ray://"):]
    else:
        hostport = address
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise RayError(f"bad Ray address {address!r}: use auto, HOST:PORT (the head node's GCS port, 6379 by default) or ray://HOST:PORT")
    why = tcp_unreachable(host.strip("[]"), int(port), timeout=5.0)
    if why:
        raise RayError(f"no Ray cluster answers at {address} ({why}); start one with `ray start --head` or use --ray auto")


def quiet_ray_data() -> None:
    """Our tqdm bar counts images; Ray Data's own bars count blocks and its INFO lines describe its plan."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for name in ("ray.data", "ray.data._internal.progress"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextmanager
def ray_cluster(options: RayOptions, log: Log | None = None) -> Iterator[ClusterInfo]:
    """Connect (or start a local cluster) for the duration of one job; reuse a connection the caller made."""
    ray = import_ray()
    started_here = owned = False
    if not ray.is_initialized():
        address: str | None = options.address
        if address in (None, "", "auto"):
            address = None
        elif address != "local":
            _check_address(address)
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        # Worker and raylet log lines would tear the progress bar; they stay in the session log folder, and an
        # actor that fails still raises here with its traceback.
        kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, configure_logging=True, log_to_driver=False)
        kwargs.update(options.init_kwargs)
        try:
            ctx = ray.init(address=address, **kwargs)
        except ValueError as e:
            raise RayError(f"cannot start or join a Ray cluster: {e}") from None
        except Exception as e:  # ConnectionError, AuthenticationError, RuntimeError: all one line to the user
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            hint = ""
            if "auth" in str(e).lower():
                hint = " (token authentication: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or ~/.ray/auth_token, as for any Ray client)"
            raise RayError(f"cannot connect to Ray at {options.address}: {first}{hint}") from None
        owned = True
        started_here = address in (None, "local") and _started_locally(ctx)
    quiet_ray_data()
    try:
        res = ray.cluster_resources()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        info = ClusterInfo(address=str(ray.get_runtime_context().gcs_address), cpus=float(res.get("CPU", 0.0)),
                           gpus=float(res.get("GPU", 0.0)), nodes=nodes, started_here=started_here)
        if log:
            log(info.describe())
        yield info
    finally:
        if owned:
            ray.shutdown()


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
