"""Embedding extraction on Ray: `train linear --ray` (and `eval --ray`).

`RayFeatureRunner` is a `train.embeddings.FeatureRunner`: `extract_embeddings` still hashes the files, looks
them up in the embedding cache and puts the results there; only the missing features are computed, by a
pool of `EncoderWorker` actors, each running the same `TorchRunner` (threads for decoding) on the same
batches as the single-process path. Completed shards are also written as Parquet (content sha256 ->
feature) beside the cache, atomically, so even a run killed before the cache flushed loses no finished
shard: the next run folds them into the cache first (`recover`), and those images count as cached.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from waste_edge._io import Log
from waste_edge.data.discovery import Sample
from waste_edge.scale.cluster import ClusterInfo, RayError, RayOptions, ray_cluster
from waste_edge.scale.jobs import RayJobStats, ShardCollector, actor_name, decode_path, encode_path, map_units
from waste_edge.scale.shards import ShardStore, read_parquet

PARTS = "ray-parts"


def module_digest(module: Any) -> str:
    """sha256 of every parameter and buffer: the driver and each actor must hold the very same encoder (same
    weights file, and for random weights the same torch), or the cache would mix two models under one key."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class EncoderWorker:
    """One Ray actor: the encoder on its device, decoding threads; units of sample paths in, features out."""

    def __init__(self, encoder_id: str, digest: str, device: str, amp: bool, threads: int, decode_threads: int) -> None:
        import torch

        from waste_edge.train.embeddings import TorchRunner
        from waste_edge.train.encoders import create_encoder

        torch.set_num_threads(threads)
        self.encoder = create_encoder(encoder_id)
        got = module_digest(self.encoder.module)
        if got != digest:
            raise RayError(f"this worker's {encoder_id} differs from the driver's (weights digest {got[:12]} vs {digest[:12]}): "
                           "install the same waste-edge, torch and open_clip, and the same weights file, on every node")
        self.runner = TorchRunner(device=device, amp=amp, workers=decode_threads, loader="threads")
        self.worker = actor_name()

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        rows = batch.to_pylist()
        samples = [Sample(Path(decode_path(p)), "", "") for r in rows for p in r["paths"]]
        positions = [pos for r in rows for pos in r["positions"]]
        unit_of = [r["unit"] for r in rows for _ in r["positions"]]
        batches, start = [], 0
        for r in rows:
            batches.append(list(range(start, start + len(r["positions"]))))
            start += len(r["positions"])
        cols: dict[str, list] = {"unit": [], "pos": [], "feature": [], "error": [], "busy_s": []}
        t_prev = time.perf_counter()
        for results in self.runner.run(self.encoder, samples, [], batches, None):  # type: ignore[arg-type]
            now = time.perf_counter()
            for j, res in results:
                cols["unit"].append(unit_of[j])
                cols["pos"].append(positions[j])
                if isinstance(res, str):
                    cols["feature"].append(None)
                    cols["error"].append(res.encode("utf-8", "surrogateescape"))
                else:
                    cols["feature"].append(np.asarray(res, dtype=np.float32).tolist())
                    cols["error"].append(None)
                cols["busy_s"].append((now - t_prev) / max(1, len(results)))
            t_prev = now
        return pa.table({
            "unit": pa.array(cols["unit"], pa.int64()),
            "pos": pa.array(cols["pos"], pa.int64()),
            "feature": pa.array(cols["feature"], pa.list_(pa.float32())),
            "error": pa.array(cols["error"], pa.binary()),
            "busy_s": pa.array(cols["busy_s"], pa.float64()),
            "worker": pa.array([self.worker] * len(cols["unit"]), pa.string()),
        })


class RayFeatureRunner:
    """Features for the samples the cache lacks, computed by an actor pool on a Ray cluster.

    Use it as a context manager to keep one connection (or one local cluster) for several extractions, as
    `train linear` does for its train and test splits; otherwise each `run` connects for its own duration.
    """

    name = "ray"

    def __init__(self, options: RayOptions | None = None, *, device: str = "auto", amp: bool = False, decode_threads: int = 2,
                 log: Log | None = None, on_shard: Callable[[int], None] | None = None) -> None:
        self.options = options or RayOptions()
        if device not in ("auto", "cpu", "cuda"):
            raise RayError(f"unknown torch device {device!r}: use auto, cpu or cuda")
        if amp and device == "cpu":
            raise RayError("--amp is fp16 autocast on a CUDA GPU; on --torch-device cpu it does not apply")
        self.device, self.amp, self.decode_threads = device, amp, decode_threads
        self.log, self.on_shard = log, on_shard
        self.stats = RayJobStats()
        self._stack: ExitStack | None = None
        self._info: ClusterInfo | None = None
        self._digests: dict[str, str] = {}

    @property
    def precision(self) -> str:
        return "amp-fp16" if self.amp else "fp32"

    def __enter__(self) -> "RayFeatureRunner":
        self._stack = ExitStack()
        self._info = self._stack.enter_context(ray_cluster(self.options, self.log))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack, self._info = None, None

    def recover(self, cache: Any) -> int:
        """Fold Parquet shards an interrupted run left beside the cache into it; they are then cache hits."""
        parts = Path(cache.dir) / PARTS
        files = sorted(parts.glob("*/part-*.parquet")) if parts.is_dir() else []
        added = 0
        for f in files:
            table = read_parquet(f)
            if table is None:
                continue
            for key, feat in zip(table.column("sha256").to_pylist(), table.column("feature").to_pylist()):
                if key not in cache:
                    cache.put(key, np.asarray(feat, dtype=np.float32))
                    added += 1
        cache.flush()
        for folder in {f.parent for f in files} | ({p for p in parts.iterdir() if p.is_dir()} if parts.is_dir() else set()):
            ShardStore.remove_folder(folder)
        if added and self.log:
            self.log(f"recovered {added} embeddings from the Parquet shards of an interrupted Ray run")
        return added

    def _device_and_gpus(self, info: ClusterInfo) -> tuple[str, float]:
        device = self.device
        if device == "auto":
            device = "cuda" if info.gpus > 0 else "cpu"
        if device == "cuda" and info.gpus <= 0:
            raise RayError("--torch-device cuda: the Ray cluster has no GPUs")
        if self.amp and device != "cuda":
            raise RayError("--amp needs CUDA GPUs in the Ray cluster (fp16 autocast); it has none: drop --amp")
        gpus = self.options.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if device == "cuda" else 0.0
        if device == "cuda" and gpus <= 0:
            raise RayError("--torch-device cuda on Ray needs GPUs per worker: --ray-gpus must be > 0")
        return device, gpus

    def run(self, encoder: Any, samples: Sequence[Sample], hashes: Sequence[str], batches: list[list[int]], cache: Any) -> Iterator[list[tuple[int, Any]]]:
        if self._info is None:  # not entered: connect for this one extraction
            with self:
                yield from self.run(encoder, samples, hashes, batches, cache)
            return
        import pyarrow as pa

        info = self._info
        device, gpus = self._device_and_gpus(info)
        per_shard = max(1, self.options.shard_size // max(1, max(len(b) for b in batches)))
        shards = {s: list(range(i, min(i + per_shard, len(batches)))) for s, i in enumerate(range(0, len(batches), per_shard))}
        job = hashlib.sha256("\n".join([Path(cache.dir).name, self.precision, *(",".join(map(str, b)) for b in batches), *hashes]).encode()).hexdigest()
        store = ShardStore(Path(cache.dir) / PARTS / job[:16], job, len(shards), {"encoder": encoder.id, "images": len(samples)})
        self.stats = RayJobStats(shards=len(shards), shards_dir=str(store.folder))
        if encoder.id not in self._digests:
            self._digests[encoder.id] = module_digest(encoder.module)
        rows = [{"unit": u, "positions": b, "paths": [encode_path(str(Path(samples[j].path).absolute())) for j in b]} for u, b in enumerate(batches)]
        constructor = {"encoder_id": encoder.id, "digest": self._digests[encoder.id], "device": device, "amp": self.amp,
                       "threads": self.options.worker_threads(), "decode_threads": self.decode_threads}
        collector = ShardCollector(shards, self.stats)
        for table in map_units(rows, EncoderWorker, constructor, self.options, info, gpus, self.stats, self.log,
                               what=f"batches of {encoder.id} ({len(samples)} images, {len(shards)} shards)"):
            _, complete = collector.add(table)
            got = [(r["pos"], r["error"].decode("utf-8", "surrogateescape") if r["feature"] is None else np.asarray(r["feature"], dtype=np.float32))
                   for r in table.select(["pos", "feature", "error"]).to_pylist()]
            for s, by_unit in complete:
                ok = [r for k in sorted(by_unit) for r in by_unit[k] if r["feature"] is not None]
                store.write(s, pa.table({"sha256": pa.array([hashes[r["pos"]] for r in ok], pa.string()),
                                         "feature": pa.array([r["feature"] for r in ok], pa.list_(pa.float32()))}))
                if self.on_shard:
                    self.on_shard(s)
            yield got
        collector.check_complete()
        # Every result is in the cache's memory now (extract_embeddings put it before asking for more): make it
        # durable there, then the Parquet shards have served their purpose.
        if cache is not None:
            cache.flush()
        store.remove()


def feature_runner(ray: RayOptions | None, *, device: str = "auto", amp: bool = False, workers: int = 2,
                   threads: int | None = None, log: Log | None = None) -> Any:
    """The `FeatureRunner` the extraction flags ask for: a Ray actor pool when `ray` is given, a `TorchRunner`
    when a device or AMP is asked for, else None (`extract_embeddings`' default runner). Open it with `with`."""
    if ray is not None:
        return RayFeatureRunner(ray, device=device, amp=amp, decode_threads=workers, log=log)
    if device == "auto" and not amp:
        return None
    from waste_edge.train.embeddings import TorchRunner

    return TorchRunner(device=device, amp=amp, workers=workers, threads=threads)
