"""Embedding extraction with an on-disk cache keyed by encoder and file content.

Extracting CLIP embeddings for 250K images takes hours on a small machine, and runs get interrupted. The
cache stores features per (encoder weights + preprocessing, sha256 of the file's bytes) in shards written
atomically as extraction goes, so an interrupted run resumes where it stopped, a renamed or moved file is
still a hit, and a second run over the same data extracts nothing.
"""

from __future__ import annotations

import io
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from waste_edge._io import atomic_write_bytes, cache_dir as cache_root, file_sha256
from waste_edge.data.decode import DecodeError, load_rgb
from waste_edge.data.discovery import Sample


def default_cache_dir() -> Path:
    return cache_root("embeddings")


class EmbeddingCache:
    """Shards of (content sha256 -> feature vector) under <root>/<encoder cache key>/, npz without pickles."""

    def __init__(self, root: str | Path, encoder_key: str, shard_size: int = 256) -> None:
        self.dir = Path(root) / encoder_key
        self.shard_size = shard_size
        self._mem: dict[str, np.ndarray] = {}
        self._pending: dict[str, np.ndarray] = {}
        self.shards_written = 0
        if self.dir.is_dir():
            for shard in sorted(self.dir.glob("shard-*.npz")):
                try:
                    with np.load(shard, allow_pickle=False) as z:
                        self._mem.update(zip(z["keys"].tolist(), z["features"]))
                except Exception:  # a torn or foreign file: ignore it, its entries are recomputed
                    continue

    def __len__(self) -> int:
        return len(self._mem)

    def get(self, key: str) -> np.ndarray | None:
        return self._mem.get(key)

    def put(self, key: str, feature: np.ndarray) -> None:
        self._mem[key] = feature
        self._pending[key] = feature
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        keys = np.array(list(self._pending), dtype="U64")
        feats = np.stack(list(self._pending.values())).astype(np.float32)
        buf = io.BytesIO()
        np.savez(buf, keys=keys, features=feats)
        atomic_write_bytes(self.dir / f"shard-{uuid.uuid4().hex[:12]}.npz", buf.getvalue())  # a shard is whole or absent
        self._pending.clear()
        self.shards_written += 1


@dataclass
class Embeddings:
    features: np.ndarray  # [n_ok, D] float32, aligned with `samples`
    samples: list[Sample]
    hashes: list[str]  # content sha256 per sample in `samples`
    failed: list[tuple[Sample, str]] = field(default_factory=list)  # unreadable files and the reason
    n_cached: int = 0
    n_extracted: int = 0

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.samples]

    def unreadable(self) -> list[tuple[str, str]]:
        return [(str(s.path), why) for s, why in self.failed]


def _chunks(seq: Sequence, n: int) -> Iterator[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _prefetch(pool: ThreadPoolExecutor, prepare: Callable, samples: Sequence[Sample], batches: list) -> Iterator[list]:
    """Decode the next batches in the pool while torch runs the current one, two batches ahead at most,
    so memory stays bounded on a 250K-image dataset."""
    queue: deque = deque()
    it = iter(batches)
    for idx in it:
        queue.append([pool.submit(prepare, samples[i]) for i in idx])
        if len(queue) > 2:
            yield [f.result() for f in queue.popleft()]
    while queue:
        yield [f.result() for f in queue.popleft()]


def extract_embeddings(
    encoder,
    samples: Sequence[Sample],
    *,
    batch_size: int = 32,
    workers: int = 2,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    desc: str = "embedding",
    on_batch: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> Embeddings:
    """Features for every readable sample; unreadable ones are returned in `failed`, never dropped silently.

    `log` gets one line: how many were extracted, reused from the cache and unreadable."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    cache = EmbeddingCache(cache_dir or default_cache_dir(), encoder.cache_key())
    pool = ThreadPoolExecutor(max_workers=max(1, workers))

    def hash_one(s: Sample) -> tuple[str | None, str | None]:
        try:
            return file_sha256(s.path), None
        except OSError as e:
            return None, f"cannot read file: {e.strerror or e}"

    def prepare(s: Sample) -> tuple[np.ndarray | None, str | None]:
        try:
            return encoder.preprocess(load_rgb(s.path)), None
        except DecodeError as e:
            return None, str(e)

    try:
        hashed = list(pool.map(hash_one, samples))
        feats: dict[int, np.ndarray] = {}
        failed: dict[int, str] = {}
        todo: list[int] = []
        for i, (h, err) in enumerate(hashed):
            if err is not None:
                failed[i] = err
            elif (f := cache.get(h)) is not None:
                feats[i] = f
            else:
                todo.append(i)
        n_cached = len(feats)
        bar = tqdm(total=len(todo), desc=desc, unit="img", disable=not progress or not todo, leave=False)
        batches = list(_chunks(todo, batch_size))
        with torch.inference_mode():
            for idx, prepared in zip(batches, _prefetch(pool, prepare, samples, batches)):
                ok = [(i, x) for i, (x, err) in zip(idx, prepared) if x is not None]
                for i, (x, err) in zip(idx, prepared):
                    if err is not None:
                        failed[i] = err
                if ok:
                    batch = torch.from_numpy(np.stack([x for _, x in ok]))
                    out = encoder.module(batch).float().numpy()
                    for (i, _), f in zip(ok, out):
                        feats[i] = f
                        cache.put(hashed[i][0], f)
                bar.update(len(idx))
                if on_batch:
                    on_batch(len(idx))
        bar.close()
    finally:
        cache.flush()
        pool.shutdown(wait=False, cancel_futures=True)
    order = sorted(feats)
    dim = int(encoder.dim)
    emb = Embeddings(
        features=np.stack([feats[i] for i in order]).astype(np.float32) if order else np.zeros((0, dim), np.float32),
        samples=[samples[i] for i in order],
        hashes=[hashed[i][0] for i in order],
        failed=[(samples[i], failed[i]) for i in sorted(failed)],
        n_cached=n_cached,
        n_extracted=len(order) - n_cached,
    )
    if log is not None:
        if emb.n_extracted == 0 and emb.n_cached:
            log(f"{desc}: all {emb.n_cached} embeddings reused from the cache (nothing extracted)")
        else:
            log(f"{desc}: {emb.n_extracted} extracted, {emb.n_cached} reused from the cache, {len(emb.failed)} unreadable")
    return emb
