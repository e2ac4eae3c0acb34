"""Radius search over 64-bit hashes without comparing all pairs: multi-index hashing (Norouzi et al., 2012).

The 64 bits are cut into `m` chunks and each chunk gets its own lookup table. If two codes differ in at most
`radius` bits, then by the pigeonhole principle at least one chunk differs in at most `r` bits, where
`m * (r + 1) > radius`. A query therefore only looks at the table entries within `r` bits of each of its chunks
(few, because `r` is small) and checks the real distance of those candidates. The number of chunks is chosen
from a cost model so that both the probes and the random candidates stay small as the collection grows; for
250K images and radius 8 that is 3 chunks of ~21 bits (at most 3 x 254 probes per query, ~0.1 random candidate
per probe) instead of 250K comparisons per query.

Everything is vectorised with numpy over batches of queries; memory is bounded by `batch`.
"""

from __future__ import annotations

from itertools import combinations
from math import comb

import numpy as np

_MAX_CHUNK_BITS = 22  # a table of 2**22 int32 counts and starts = 32 MB at most


def _flip_masks(width: int, r: int) -> np.ndarray:
    """Every `width`-bit mask with at most `r` bits set (the neighbourhood probed in one chunk)."""
    masks = [0]
    for k in range(1, r + 1):
        masks += [sum(1 << b for b in bits) for bits in combinations(range(width), k)]
    return np.array(masks, dtype=np.int64)


def _plan(n: int, radius: int) -> tuple[int, int]:
    """(chunks, per-chunk radius) minimising probes + expected random candidates per query."""
    best: tuple[float, int, int] | None = None
    for m in range(1, 65):
        width = -(-64 // m)
        if width > _MAX_CHUNK_BITS:
            continue
        r = -(-(radius + 1) // m) - 1  # smallest r with m * (r + 1) >= radius + 1
        probes = m * sum(comb(width, k) for k in range(r + 1))
        cost = probes * (1.0 + n / 2.0**width)
        if best is None or cost < best[0]:
            best = (cost, m, r)
        if r == 0:
            break
    assert best is not None
    return best[1], best[2]


class HammingIndex:
    """Codes (uint64) searchable by Hamming radius; `pairs(queries)` returns every (query, code) within it."""

    def __init__(self, codes: np.ndarray, radius: int, *, batch: int = 4096) -> None:
        if not 0 <= radius < 64:
            raise ValueError(f"radius must be in 0..63, got {radius}")
        self.codes = np.ascontiguousarray(codes, dtype=np.uint64)
        self.radius = radius
        self.batch = batch
        self.n_chunks, self.chunk_radius = _plan(len(self.codes), radius)
        bounds = np.linspace(0, 64, self.n_chunks + 1).round().astype(int)
        self._chunks = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            width = int(hi - lo)
            keys = self._chunk(self.codes, int(lo), width)
            counts = np.bincount(keys, minlength=1 << width).astype(np.int64)
            starts = np.cumsum(counts) - counts
            order = np.argsort(keys, kind="stable")
            self._chunks.append((int(lo), width, counts, starts, order, _flip_masks(width, self.chunk_radius)))

    @staticmethod
    def _chunk(codes: np.ndarray, lo: int, width: int) -> np.ndarray:
        return ((codes >> np.uint64(lo)) & np.uint64((1 << width) - 1)).astype(np.int64)

    def pairs(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query index, code index, distance) for every pair within `radius`, each pair once, sorted."""
        queries = np.ascontiguousarray(queries, dtype=np.uint64)
        out_q, out_c = [], []
        for start in range(0, len(queries), self.batch):
            q = queries[start : start + self.batch]
            found = [self._candidates(q, chunk) for chunk in self._chunks]
            qi = np.concatenate([f[0] for f in found])
            ci = np.concatenate([f[1] for f in found])
            keep = np.bitwise_count(q[qi] ^ self.codes[ci]) <= self.radius
            qi, ci = qi[keep], ci[keep]
            # the same pair can be found through several chunks
            code = np.unique(qi.astype(np.int64) * len(self.codes) + ci)
            out_q.append(code // max(len(self.codes), 1) + start)
            out_c.append(code % max(len(self.codes), 1))
        if not out_q:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty
        qi, ci = np.concatenate(out_q), np.concatenate(out_c)
        dist = np.bitwise_count(queries[qi] ^ self.codes[ci]).astype(np.int64)
        return qi, ci, dist

    def _candidates(self, q: np.ndarray, chunk: tuple) -> tuple[np.ndarray, np.ndarray]:
        lo, width, counts, starts, order, masks = chunk
        probe = (self._chunk(q, lo, width)[:, None] ^ masks[None, :]).ravel()
        cnt = counts[probe]
        hit = np.nonzero(cnt)[0]
        cnt = cnt[hit]
        total = int(cnt.sum())
        if total == 0:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        qi = np.repeat(hit // len(masks), cnt)
        # positions start..start+cnt-1 of each hit bucket, flattened without a Python loop
        first = np.repeat(starts[probe[hit]], cnt)
        offset = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        return qi, order[first + offset]
