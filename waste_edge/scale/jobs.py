"""What every Ray job here does the same way: work units through an actor pool, results gathered per shard.

A job is a list of work units (a batch of images, a video), grouped into shards of consecutive units. Ray
Data maps the units through a callable class (`map_batches`, a fixed actor pool, explicit CPUs / GPUs per
actor) and streams the actors' output rows back; `ShardCollector` says when all units of a shard are in, so
the caller can write that shard and move on. Actors add two columns, `worker` and `busy_s`, from which the
per-worker throughput of the benchmark is computed.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from waste_edge._io import Log
from waste_edge.scale.cluster import ClusterInfo, RayError, RayOptions, blocks_for, compute_strategy, pool_size, ray_log_path

UNITS_PER_CALL = 4  # units handed to an actor per call: it decodes the next while it computes this one
STAT_COLUMNS = ("worker", "busy_s")


def encode_path(text: str) -> bytes:
    """Paths and messages travel as bytes: a non-UTF-8 file name survives the trip (Arrow strings are UTF-8)."""
    return os.fsencode(text)


def decode_path(data: bytes) -> str:
    return os.fsdecode(data)


def actor_name() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_actor_id() or f"pid-{os.getpid()}"
    except Exception:
        return f"pid-{os.getpid()}"


@dataclass
class RayJobStats:
    """What a Ray run did, for the summary line and the benchmark (per-worker throughput)."""

    shards: int = 0
    shards_reused: int = 0
    workers: int = 0
    start_s: float = 0.0  # from submission to the first result: actor start-up and model loading included
    wall_s: float = 0.0  # from submission to the last result
    busy_s: dict[str, float] = field(default_factory=dict)  # per actor: seconds spent decoding + computing
    rows: dict[str, int] = field(default_factory=dict)  # per actor: rows produced
    shards_dir: str = ""

    def per_worker_rate(self) -> float | None:
        """Rows per busy second of one actor, averaged over actors (None when nothing ran)."""
        rates = [self.rows[w] / s for w, s in self.busy_s.items() if s > 0]
        return sum(rates) / len(rates) if rates else None

    def summary(self) -> str:
        text = f"ray: {self.shards} shards ({self.shards_reused} reused from an earlier run) in {self.shards_dir}"
        if self.workers:
            text += f"; {self.workers} workers, first result after {self.start_s:.1f} s"
        rate = self.per_worker_rate()
        if rate:
            text += f", {rate:.1f} img/s per worker while busy"
        return text


class ShardCollector:
    """Gathers actor output rows by unit and hands back each shard once all its units have answered."""

    def __init__(self, shards: dict[int, Sequence[int]], stats: RayJobStats) -> None:
        self.shard_of = {k: s for s, ks in shards.items() for k in ks}
        self.waiting = {s: set(ks) for s, ks in shards.items()}
        self.rows: dict[int, dict[int, list[dict]]] = {s: {} for s in shards}
        self.stats = stats

    def add(self, table: Any) -> tuple[dict[int, int], list[tuple[int, dict[int, list[dict]]]]]:
        """Rows of one output block -> (rows per unit that answered in it, shards now complete with their rows)."""
        answered: dict[int, int] = {}
        for r in table.to_pylist():
            w = r.pop("worker")
            self.stats.busy_s[w] = self.stats.busy_s.get(w, 0.0) + r.pop("busy_s")
            self.stats.rows[w] = self.stats.rows.get(w, 0) + 1
            k = r["unit"]
            self.rows[self.shard_of[k]].setdefault(k, []).append(r)
            answered[k] = answered.get(k, 0) + 1
        complete = []
        for k in answered:
            s = self.shard_of[k]
            self.waiting[s].discard(k)
            if not self.waiting[s]:
                del self.waiting[s]
                complete.append((s, self.rows.pop(s)))
        return answered, sorted(complete)

    def check_complete(self) -> None:
        if self.waiting:
            first = min(self.waiting)
            raise RayError(f"Ray returned no results for {len(self.waiting)} shards (first: {first}); run the same command again to redo them")


def map_units(rows: list[dict], worker: type, constructor: dict[str, Any], options: RayOptions, info: ClusterInfo,
              gpus_per_worker: float, stats: RayJobStats, log: Log | None = None, what: str = "work units") -> Iterator[Any]:
    """Stream the output tables of `worker` (a callable class) mapped over `rows` by a fixed actor pool."""
    import ray.data

    size = pool_size(options, info, gpus_per_worker, len(rows))
    stats.workers = size
    ds = ray.data.from_items(rows, override_num_blocks=blocks_for(len(rows), size))
    ds = ds.map_batches(
        worker,
        batch_size=max(1, min(UNITS_PER_CALL, len(rows) // size)),
        batch_format="pyarrow",
        compute=compute_strategy(size),
        num_cpus=options.cpus_per_worker,
        num_gpus=gpus_per_worker,
        fn_constructor_kwargs=constructor,
    )
    if log:
        log(f"ray: {len(rows)} {what} on {size} workers ({options.cpus_per_worker:g} CPU, {gpus_per_worker:g} GPU each)")
    t0 = time.perf_counter()
    first = True
    try:
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            if first:
                stats.start_s, first = time.perf_counter() - t0, False
            yield table
    except (KeyboardInterrupt, RayError):
        raise
    except Exception as e:  # an actor that failed or died, a task out of retries: one line, Ray's trace in its log
        raise RayError(f"the Ray job failed: {root_cause(e)} (Ray's own output: {ray_log_path()})") from None
    finally:
        stats.wall_s = time.perf_counter() - t0


# Ray's wrappers around the error that happened in a worker: their names say nothing to the user.
_RAY_WRAPPERS = ("RayTaskError", "RayActorError", "ActorDiedError", "SystemException", "RaySystemError", "TaskError",
                 "UserCodeException", "WorkerCrashedError")
_ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*(?:Error|Exception|Exit)): (.+)$")


def root_cause(e: BaseException) -> str:
    """The error that happened in the worker, as `Type: message`: the innermost exception of the chain, and
    inside Ray's wrappers (whose text carries the worker's traceback) its last `SomeError: message` line, so an
    actor that died of a BackendError reads as that BackendError, not as "SystemException"."""
    chain: list[BaseException] = []
    cause: BaseException | None = e
    while isinstance(cause, BaseException) and all(cause is not c for c in chain):
        chain.append(cause)
        cause = getattr(cause, "cause", None) or cause.__cause__
    for exc in reversed(chain):
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        for line in reversed(lines):
            m = _ERROR_LINE.match(line)
            if m and m.group(1) not in _RAY_WRAPPERS:
                return f"{m.group(1)}: {m.group(2)}"
        if type(exc).__name__ not in _RAY_WRAPPERS:
            return f"{type(exc).__name__}: {lines[-1] if lines else ''}".strip()
    last = chain[-1]
    text = [ln for ln in str(last).splitlines() if ln.strip()]
    return f"{type(last).__name__}: {text[-1].strip() if text else ''}".strip()
