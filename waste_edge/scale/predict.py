"""`predict --ray`: the single-process predict job, run as Ray Data over its work units.

The job is planned exactly as `runtime.predict.run_predict` plans it (`plan_units`: the same image batches,
one unit per video, input errors kept on the driver), so every actor classifies the same batches with the
same decoder and the same `classify_unit`, and returns raw outcomes (probabilities or error text). The driver
writes them into Parquet shards as shards complete, and merges shards, in order, through the same
`RowWriter` as the single-process path: identical rows, error rows included, and whatever hardening the row
writer gets applies here too. A rerun of the same command after an interruption skips completed shards.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from waste_edge._io import Log, cache_dir, file_sha256
from waste_edge.runtime.predict import (
    InputItem,
    Outcome,
    PredictSummary,
    PredictTally,
    WorkUnit,
    classify_unit,
    decoded_units,
    expand_inputs,
    expected_rows,
    open_predict_output,
    plan_units,
)
from waste_edge.scale.cluster import ClusterInfo, RayError, RayOptions, ray_cluster
from waste_edge.scale.jobs import RayJobStats, ShardCollector, actor_name, decode_path, encode_path, map_units
from waste_edge.scale.shards import ShardStore

FORMAT_VERSION = 1


class PredictWorker:
    """One Ray actor: one fused model in ONNX Runtime and a few decoding threads. A batch of work units in,
    one row per outcome out (unit, position, frame, probabilities or error), plus its busy time."""

    def __init__(self, model: str, backend: str, threads: int, batch_size: int, decode_threads: int, max_pixels: int | None = None) -> None:
        from waste_edge.runtime.classifier import Classifier

        self.classifier = Classifier(model, backend, threads=threads)
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.pool = ThreadPoolExecutor(max_workers=max(1, decode_threads), thread_name_prefix="decode")
        self.worker = actor_name()

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        rows = batch.to_pylist()
        units = [WorkUnit(r["kind"], tuple(InputItem(Path(decode_path(p)), "image" if r["kind"] == "images" else r["kind"]) for p in r["paths"]))
                 for r in rows]
        cols: dict[str, list] = {"unit": [], "pos": [], "frame": [], "probs": [], "error": [], "busy_s": []}
        t_prev = time.perf_counter()
        for r, (unit, decoded) in zip(rows, decoded_units(units, self.pool, self.classifier.model_sized, self.max_pixels)):
            n = 0
            for outcomes in classify_unit(self.classifier, unit, decoded, self.batch_size):
                for o in outcomes:
                    cols["unit"].append(r["unit"])
                    cols["pos"].append(n)  # image outcomes come in item order; video outcomes in frame order
                    cols["frame"].append(o.frame)
                    if isinstance(o.result, str):
                        cols["probs"].append(None)
                        cols["error"].append(o.result.encode("utf-8", "surrogateescape"))
                    else:
                        cols["probs"].append(np.asarray(o.result, dtype=np.float32).tolist())
                        cols["error"].append(None)
                    n += 1
            now = time.perf_counter()
            cols["busy_s"].extend([(now - t_prev) / max(1, n)] * n)
            t_prev = now
        return pa.table({
            "unit": pa.array(cols["unit"], pa.int64()),
            "pos": pa.array(cols["pos"], pa.int32()),
            "frame": pa.array(cols["frame"], pa.int64()),
            "probs": pa.array(cols["probs"], pa.list_(pa.float32())),
            "error": pa.array(cols["error"], pa.binary()),
            "busy_s": pa.array(cols["busy_s"], pa.float64()),
            "worker": pa.array([self.worker] * len(cols["unit"]), pa.string()),
        })


@dataclass
class RayPredictSummary(PredictSummary):
    ray: RayJobStats = field(default_factory=RayJobStats)

    def summary(self) -> str:
        return super().summary() + "\n" + self.ray.summary()


def _stat(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def job_fingerprint(model_sha: str, backend: str, batch_size: int, shard_units: int, units: Sequence[WorkUnit]) -> str:
    """Same inputs (names, sizes, modification times), model, backend and batching: same job, same shards."""
    doc = {
        "v": FORMAT_VERSION, "model": model_sha, "backend": backend, "batch": batch_size, "shard_units": shard_units,
        "units": [[u.kind, [[str(Path(i.path).absolute()), _stat(Path(i.path))] for i in u.items]] for u in units],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode("utf-8", "surrogateescape")).hexdigest()


def _shard_plan(units: Sequence[WorkUnit], shard_units: int) -> list[list[int]]:
    """Shard s holds the ids of consecutive Ray units (input errors stay on the driver and belong to none)."""
    ray_units = [k for k, u in enumerate(units) if u.kind != "error"]
    return [ray_units[i : i + shard_units] for i in range(0, len(ray_units), shard_units)]


def _outcomes(unit: WorkUnit, table: Any) -> list[Outcome]:
    """A unit's outcomes from its shard rows, with the driver's own paths (what the user typed, not what a worker saw)."""
    order = sorted(table, key=lambda r: r["pos"])
    out = []
    for r in order:
        path = unit.items[0].path if unit.kind == "video" else unit.items[r["pos"]].path
        result: np.ndarray | str = (r["error"].decode("utf-8", "surrogateescape") if r["probs"] is None
                                    else np.asarray(r["probs"], dtype=np.float32))
        out.append(Outcome(path, r["frame"], result))
    return out


class _Merger:
    """Writes units in plan order as soon as the shards holding them are complete (input errors directly)."""

    def __init__(self, units: Sequence[WorkUnit], shards: list[list[int]], store: ShardStore, tally: PredictTally, batch_size: int) -> None:
        self.units, self.store, self.tally, self.batch_size = units, store, tally, batch_size
        self.shard_of = {k: s for s, ks in enumerate(shards) for k in ks}
        self.last_of = {s: ks[-1] for s, ks in enumerate(shards)}
        self.cursor = 0
        self.ready: dict[int, dict[int, list[dict]]] = {}  # shard -> unit -> rows, for complete shards not yet written

    def shard_ready(self, shard: int, by_unit: dict[int, list[dict]] | None = None) -> None:
        if by_unit is None:  # completed by an earlier run: read it back
            by_unit = {}
            for r in self.store.read(shard).to_pylist():
                by_unit.setdefault(r["unit"], []).append(r)
        self.ready[shard] = by_unit
        self.advance()

    def advance(self) -> None:
        while self.cursor < len(self.units):
            unit = self.units[self.cursor]
            if unit.kind == "error":
                self.tally.unit_started(unit)
                for outcomes in classify_unit(None, unit, None, self.batch_size):  # type: ignore[arg-type]
                    self.tally.emit(unit, outcomes)
            else:
                s = self.shard_of[self.cursor]
                if s not in self.ready:
                    return
                self.tally.unit_started(unit)
                self.tally.emit(unit, _outcomes(unit, self.ready[s].get(self.cursor, [])))
                if self.cursor == self.last_of[s]:
                    del self.ready[s]  # its rows are written: keep memory to the shards in flight
            self.cursor += 1

    @property
    def finished(self) -> bool:
        return self.cursor >= len(self.units)


def run_predict_ray(
    model: str | Path | None,
    sources: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    options: RayOptions | None = None,
    backend: str = "auto",
    batch_size: int = 16,
    decode_threads: int = 2,
    progress: bool = True,
    log: Log | None = None,
    on_shard: Callable[[int], None] | None = None,
    max_pixels: int | None = None,
) -> RayPredictSummary:
    """`run_predict` on a Ray cluster: the same rows in the same order, written to `out` (.csv / .jsonl / stdout).

    `log` gets the model line first, then the cluster's and the job's. `on_shard(index)` is called after each
    shard is safely on disk (progress hooks; tests interrupt there).
    """
    from waste_edge.runtime.model_info import read_metadata
    from waste_edge.runtime.model_path import resolve_model_path

    options = options or RayOptions()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    t0 = time.perf_counter()
    model_path = resolve_model_path(model).resolve()
    meta = read_metadata(model_path)
    classes = list(meta.classes)
    if log:
        log(f"model: {model_path.name}: {meta.encoder} {meta.variant}, classes {', '.join(classes)}; backend {backend} in each Ray worker")
    units = plan_units(expand_inputs(sources), batch_size)
    shard_units = max(1, options.shard_size // batch_size)
    shards = _shard_plan(units, shard_units)
    job = job_fingerprint(file_sha256(model_path), backend, batch_size, shard_units, units)
    folder = Path(options.shards_dir) if options.shards_dir else cache_dir("scale", "predict", job[:16])
    store = ShardStore(folder, job, len(shards), {"model": str(model_path), "units": len(units), "batch_size": batch_size})
    done = store.done()
    stats = RayJobStats(shards=len(shards), shards_reused=len(done), shards_dir=str(folder))

    todo = [s for s in range(len(shards)) if s not in done]
    with ExitStack() as stack:
        # Join the cluster before the output is opened: a wrong address must not leave a truncated table behind.
        info = stack.enter_context(ray_cluster(options, log)) if todo else None
        writer, bar = open_predict_output(out, classes, sum(expected_rows(u) for u in units), progress)
        summary = RayPredictSummary(out=writer.name, ray=stats)
        merger = _Merger(units, shards, store, PredictTally(writer, summary, _NoBar()), batch_size)
        try:
            # Input errors are rows the driver writes itself; shards done by an earlier run are read back in order.
            bar.update(sum(1 for u in units if u.kind == "error") + sum(expected_rows(units[k]) for s in done for k in shards[s]))
            merger.advance()
            for s in sorted(done):
                merger.shard_ready(s)
            if info is not None:
                _run_shards(units, shards, todo, store, merger, bar, stats, info, options, model_path, backend, batch_size,
                            decode_threads, log, on_shard, max_pixels)
            if not merger.finished:  # only if a shard lost rows: say so rather than write a short table
                raise RayError(f"{len(units) - merger.cursor} work units have no results; run the same command again to redo them")
        except KeyboardInterrupt:
            if log:
                log(f"interrupted: {len(store.done())} of {len(shards)} shards are done in {folder}; run the same command again to resume")
            raise
        finally:
            bar.close()
            writer.close()
            summary.elapsed_s = time.perf_counter() - t0
    store.remove()
    return summary


class _NoBar:
    """The merge writes rows the Ray bar already counted."""

    def update(self, n: int) -> None:
        pass


def _run_shards(units: Sequence[WorkUnit], shards: list[list[int]], todo: list[int], store: ShardStore, merger: _Merger,
                bar: Any, stats: RayJobStats, info: ClusterInfo, options: RayOptions, model_path: Path, backend: str, batch_size: int,
                decode_threads: int, log: Log | None, on_shard: Callable[[int], None] | None, max_pixels: int | None = None) -> None:
    import pyarrow as pa

    gpus = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if backend in ("cuda", "tensorrt") else 0.0)
    rows = [{"unit": k, "kind": units[k].kind, "paths": [encode_path(str(Path(i.path).absolute())) for i in units[k].items]}
            for s in todo for k in shards[s]]
    collector = ShardCollector({s: shards[s] for s in todo}, stats)
    constructor = {"model": str(model_path), "backend": backend, "threads": options.worker_threads(),
                   "batch_size": batch_size, "decode_threads": decode_threads, "max_pixels": max_pixels}
    for table in map_units(rows, PredictWorker, constructor, options, info, gpus, stats, log, what=f"work units in {len(todo)} shards"):
        answered, complete = collector.add(table)
        bar.update(sum(answered.values()))
        for s, by_unit in complete:
            store.write(s, pa.Table.from_pylist([r for k in sorted(by_unit) for r in by_unit[k]], schema=_shard_schema()))
            if on_shard:
                on_shard(s)
            merger.shard_ready(s, by_unit)
    collector.check_complete()


def _shard_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("unit", pa.int64()), ("pos", pa.int32()), ("frame", pa.int64()), ("probs", pa.list_(pa.float32())), ("error", pa.binary())])
