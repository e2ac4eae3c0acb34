"""The dataset check: unreadable files, exact duplicates, flip/rotation near duplicates, and split leakage.

Why it exists: the study augmented 150K photos with flips and rotations to 250K and split *afterwards*, so a
test image can be the mirror of a training image and every accuracy figure is inflated. This module finds
those pairs from the pixels (names can lie), marks the ones that cross splits (leakage) or disagree on the
label (conflicts), and gives `split_groups` the duplicate groups it needs for a split without leakage.

Pipeline: discover -> content key per file (blake2b of the bytes: exact duplicates, cache key) -> 8-orientation
perceptual hashes per distinct content (cached, process pool) -> multi-index Hamming search on the 64-bit
hashes -> confirmation with the 256-bit hashes -> pairs expanded back to files.

Thresholds (measured on waste-sample, 2,061 photos, and 400 planted copies of them, each mirrored or rotated,
re-encoded as JPEG quality 60 and two thirds of them resized by 0.85-1.15):
- planted copies: 64-bit distance <= 4 for all 400, 256-bit distance <= 20;
- distinct photos: 64-bit <= 4: 3 pairs, <= 8: 32 pairs, <= 10: 115 pairs (min over the 8 orientations);
  of the 32 pairs within 8 bits, 256-bit <= 40 keeps only two, both real near duplicates in the sample (the
  same compost photo at two crops, the same grain-sack photo slightly shifted); the next pair is at 48
  (same TrashNet object photographed twice) and clearly distinct photos start at 54.
So the defaults are 8/64 (twice the worst planted copy, and the index radius) and 40/256 (twice the worst
planted copy, below every distinct pair): 0 false pairs on waste-sample against a budget of 2 (1 per 1,000).
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from waste_edge.data import kaggle_names
from waste_edge.data.decode import DecodeError
from waste_edge.data.discovery import SPLITS, discover
from waste_edge.data.hamming_index import HammingIndex
from waste_edge.data.options import DEFAULT_FINE_RADIUS, DEFAULT_RADIUS
from waste_edge.data.perceptual_hash import (
    COARSE_BITS,
    FINE_BITS,
    HASH_ALGORITHM,
    INVERSE,
    TRANSFORMS,
    HashCache,
    ImageHashes,
    content_key,
    fine_distance,
    hash_file,
)

DEFAULT_THRESHOLD = DEFAULT_RADIUS  # bits of the 64-bit pHash: the index radius (see the module docstring)
DEFAULT_FINE_THRESHOLD = DEFAULT_FINE_RADIUS  # bits of the 256-bit pHash that confirm a match
_SAVE_EVERY = 20_000  # hashes computed between cache checkpoints, so an interrupted 250K run keeps its work


@dataclass
class FileRecord:
    path: str  # as given (discovery joins it onto the path from the command line)
    label: str
    split: str
    key: str | None = None  # content key; None when the file could not be read
    error: str | None = None  # why it cannot be used as an image


@dataclass(frozen=True)
class NearPair:
    a: int  # file indices into CheckResult.files; a < b, so in a cross-split pair a is the train file
    b: int
    distance: int  # 64-bit pHash bits, best orientation
    fine_distance: int  # 256-bit pHash bits, same orientation
    transform: str  # b looks like transform(a)
    cross_split: bool
    label_conflict: bool


@dataclass
class CheckResult:
    source: str
    layout: str
    files: list[FileRecord]
    exact_groups: list[list[int]]  # file indices sharing identical bytes (readable files only)
    near_pairs: list[NearPair]
    discovery_problems: list[tuple[str, str]]
    threshold: int
    fine_threshold: int
    hashed: int = 0  # perceptual hashes computed in this run (0 on a fully cached second run)
    from_cache: int = 0
    hash_seconds: float = 0.0
    cache_path: str | None = None
    warnings: list[str] = field(default_factory=list)

    # --- derived views -------------------------------------------------------------------------------------
    def counts(self) -> dict[str, dict[str, int]]:
        classes = sorted({f.label for f in self.files})
        out: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            rows = [f for f in self.files if f.split == split]
            if rows:
                out[split] = {c: sum(1 for f in rows if f.label == c) for c in classes}
        return out

    def unreadable(self) -> list[FileRecord]:
        return [f for f in self.files if f.error is not None]

    def groups(self) -> list[list[int]]:
        """Connected components over exact and near duplicates (scipy's `connected_components`); every file is
        in exactly one, groups ordered by their first file."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        edges = [(g[0], j) for g in self.exact_groups for j in g[1:]] + [(p.a, p.b) for p in self.near_pairs]
        n = len(self.files)
        rows, cols = (np.array(x, dtype=np.int64) for x in zip(*edges)) if edges else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        _, label = connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)), directed=False)
        comps: dict[int, list[int]] = defaultdict(list)
        for i, c in enumerate(label.tolist()):
            comps[c].append(i)
        return sorted(comps.values(), key=lambda g: g[0])

    def exact_pairs_cross_split(self) -> int:
        n = 0
        for g in self.exact_groups:
            per_split = Counter(self.files[i].split for i in g)
            n += len(g) * (len(g) - 1) // 2 - sum(k * (k - 1) // 2 for k in per_split.values())
        return n

    def leaked(self) -> dict[str, list[int]]:
        """Per non-train split, its files that have an exact or near duplicate in train."""
        out: dict[str, set[int]] = defaultdict(set)
        for g in self.exact_groups:
            if any(self.files[i].split == "train" for i in g):
                for i in g:
                    if self.files[i].split != "train":
                        out[self.files[i].split].add(i)
        for p in self.near_pairs:
            fa, fb = self.files[p.a], self.files[p.b]
            if fa.split == "train" and fb.split != "train":
                out[fb.split].add(p.b)
            elif fb.split == "train" and fa.split != "train":
                out[fa.split].add(p.a)
        return {k: sorted(v) for k, v in out.items()}

    def name_patterns(self) -> dict:
        paths = [f.path for f in self.files]
        counts = kaggle_names.tag_counts(paths)
        comp = {i: gi for gi, g in enumerate(self.groups()) for i in g}
        crossing = []
        for key, idx in sorted(kaggle_names.name_groups(paths).items()):
            splits = sorted({self.files[i].split for i in idx})
            if len(splits) < 2:
                continue
            confirmed = any(
                comp[i] == comp[j] and self.files[i].split != self.files[j].split for i in idx for j in idx if i < j
            )
            crossing.append({"key": key, "paths": [paths[i] for i in idx], "splits": splits, "pixel_confirmed": confirmed})
        return {
            "tag_counts": counts,
            "tagged_files": sum(counts.values()),
            "cross_split_groups": crossing,
        }

    def totals(self) -> dict:
        """The figures of the check (the JSON report's `summary` object)."""
        counts = self.counts()
        leaked = self.leaked()
        unreadable = len(self.unreadable())
        names = self.name_patterns()
        groups = self.groups()
        return {
            "source": self.source,
            "layout": self.layout,
            "files": len(self.files),
            "readable": len(self.files) - unreadable,
            "unreadable": unreadable,
            "distinct_contents": len({f.key for f in self.files if f.key is not None and f.error is None}),
            "exact_duplicate_groups": len(self.exact_groups),
            "exact_duplicate_files": sum(len(g) for g in self.exact_groups),
            "exact_duplicate_pairs_cross_split": self.exact_pairs_cross_split(),
            "exact_duplicate_groups_label_conflict": sum(len({self.files[i].label for i in g}) > 1 for g in self.exact_groups),
            "near_duplicate_pairs": len(self.near_pairs),
            "near_duplicate_pairs_cross_split": sum(p.cross_split for p in self.near_pairs),
            "near_duplicate_pairs_label_conflict": sum(p.label_conflict for p in self.near_pairs),
            "near_duplicate_transforms": {t: n for t in TRANSFORMS if (n := sum(p.transform == t for p in self.near_pairs))},
            "duplicate_groups": sum(len(g) > 1 for g in groups),
            "largest_duplicate_group": max((len(g) for g in groups), default=0),
            "leaked_files": {s: len(v) for s, v in leaked.items()},
            "leaked_fraction": {s: round(len(v) / max(sum(counts.get(s, {}).values()), 1), 4) for s, v in leaked.items()},
            "name_tagged_files": names["tagged_files"],
            "name_cross_split_groups": len(names["cross_split_groups"]),
            "discovery_problems": len(self.discovery_problems),
            "threshold": self.threshold,
            "fine_threshold": self.fine_threshold,
            "transform_convention": "b looks like transform(a); rot90 = a quarter turn counter-clockwise (PIL ROTATE_90)",
            "hash": f"imagehash pHash {COARSE_BITS}-bit index + {FINE_BITS}-bit confirmation, 8 flips/rotations ({HASH_ALGORITHM})",
            "hashed": self.hashed,
            "from_cache": self.from_cache,
            "hash_seconds": round(self.hash_seconds, 3),
            "images_per_second": round(self.hashed / self.hash_seconds, 1) if self.hashed and self.hash_seconds > 0 else None,
            "cache": self.cache_path,
        }

    def has_leakage(self) -> bool:
        return bool(self.leaked()) or any(p.cross_split for p in self.near_pairs) or self.exact_pairs_cross_split() > 0

    def has_conflicts(self) -> bool:
        return any(p.label_conflict for p in self.near_pairs) or any(
            len({self.files[i].label for i in g}) > 1 for g in self.exact_groups
        )

    def should_fail(self, fail_on: str) -> bool:
        """Whether `--fail-on` asks for a non-zero exit: never, leakage, conflicts, or any finding at all."""
        if fail_on == "never":
            return False
        if fail_on == "leakage":
            return self.has_leakage()
        if fail_on == "conflicts":
            return self.has_conflicts()
        return bool(self.unreadable() or self.exact_groups or self.near_pairs or self.discovery_problems)

    def to_json(self) -> dict:
        f = self.files
        return {
            "counts": self.counts(),
            "unreadable": [{"path": r.path, "reason": r.error} for r in self.unreadable()],
            "exact_duplicates": [[f[i].path for i in g] for g in self.exact_groups],
            "near_duplicates": [
                {
                    "a": f[p.a].path,
                    "b": f[p.b].path,
                    "distance": p.distance,
                    "fine_distance": p.fine_distance,
                    "transform": p.transform,
                    "cross_split": p.cross_split,
                    "label_conflict": p.label_conflict,
                    "split_a": f[p.a].split,
                    "split_b": f[p.b].split,
                    "label_a": f[p.a].label,
                    "label_b": f[p.b].label,
                }
                for p in self.near_pairs
            ],
            "name_patterns": self.name_patterns(),
            "discovery_problems": [{"item": item, "reason": reason} for item, reason in self.discovery_problems],
            "summary": self.totals(),
        }

    def summary(self, show: int = 10) -> str:
        """The human summary the CLI prints: counts table, findings, and the first `show` leakage pairs."""
        s = self.totals()
        counts = self.counts()
        classes = sorted({c for row in counts.values() for c in row})
        lines = [f"data check: {self.source} ({self.layout} layout, {len(self.files)} files)", ""]
        header = f"{'split':<8}" + "".join(f"{c:>10}" for c in classes) + f"{'total':>10}"
        lines.append(header)
        for split, row in counts.items():
            lines.append(f"{split:<8}" + "".join(f"{row[c]:>10}" for c in classes) + f"{sum(row.values()):>10}")
        lines.append("")
        lines.append(f"unreadable files:        {s['unreadable']}")
        for r in self.unreadable()[:show]:
            lines.append(f"  {r.path}: {r.error}")
        lines.append(
            f"exact duplicates:        {s['exact_duplicate_groups']} groups, {s['exact_duplicate_files']} files "
            f"({s['exact_duplicate_pairs_cross_split']} pairs across splits, {s['exact_duplicate_groups_label_conflict']} groups with conflicting labels)"
        )
        lines.append(
            f"near duplicates:         {s['near_duplicate_pairs']} pairs ({s['near_duplicate_pairs_cross_split']} across splits, "
            f"{s['near_duplicate_pairs_label_conflict']} with conflicting labels); by transform: "
            + (", ".join(f"{k} {v}" for k, v in s["near_duplicate_transforms"].items()) or "-")
        )
        for split, n in s["leaked_files"].items():
            total = sum(counts.get(split, {}).values())
            lines.append(f"LEAKAGE: {n} of {total} {split} files ({100 * n / max(total, 1):.1f} %) have a copy in train")
        if not s["leaked_files"]:
            lines.append("leakage:                 none found between train and the other splits")
        names = self.name_patterns()
        tags = ", ".join(f"{t} {n}" for t, n in names["tag_counts"].items() if n) or "none"
        lines.append(
            f"Kaggle name tags:        {names['tagged_files']} files ({tags}); {len(names['cross_split_groups'])} name groups span splits "
            f"({sum(g['pixel_confirmed'] for g in names['cross_split_groups'])} confirmed by pixels)"
        )
        if self.discovery_problems:
            lines.append(f"discovery problems:      {len(self.discovery_problems)}")
            for item, reason in self.discovery_problems[:show]:
                lines.append(f"  {item}: {reason}")
        crossing = [p for p in self.near_pairs if p.cross_split or p.label_conflict]
        if crossing and show:
            lines.append("")
            lines.append(f"first {min(show, len(crossing))} of {len(crossing)} pairs across splits or labels (b ~ transform(a)):")
            for p in crossing[:show]:
                fa, fb = self.files[p.a], self.files[p.b]
                lines.append(
                    f"  {fa.split}/{fa.label} {fa.path}  ~  {fb.split}/{fb.label} {fb.path}  [{p.transform}, {p.distance}/{COARSE_BITS}, {p.fine_distance}/{FINE_BITS} bits]"
                )
        rate = f", {s['images_per_second']} img/s" if s["images_per_second"] else ""
        lines.append("")
        lines.append(
            f"hashes: {self.hashed} computed in {self.hash_seconds:.1f} s{rate}, {self.from_cache} from cache; "
            f"thresholds {self.threshold}/{COARSE_BITS} and {self.fine_threshold}/{FINE_BITS} bits"
        )
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


# --- hashing ---------------------------------------------------------------------------------------------------


def _hash_job(path: str) -> tuple[np.ndarray, np.ndarray] | str:
    """Worker: hashes, or the one-line reason the file cannot be hashed (never raises: one bad file must not
    stop a 250K-image run)."""
    try:
        h = hash_file(path)
        return h.coarse, h.fine
    except DecodeError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - anything a decoder throws becomes a reported, skipped file
        return f"cannot hash image: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")


def _key_job(path: str) -> tuple[str | None, str | None]:
    try:
        return content_key(path), None
    except DecodeError as e:
        return None, str(e)


def _progress(it: Iterable, total: int, desc: str, enabled: bool) -> Iterator:
    if not enabled:
        yield from it
        return
    from tqdm import tqdm

    yield from tqdm(it, total=total, desc=desc, unit="img", dynamic_ncols=True, mininterval=0.5)


def _hash_all(paths: list[str], workers: int, progress: bool) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray] | str]]:
    """(index, result) in input order. Processes, not threads: pHash is mostly Python work that holds the GIL."""
    if workers <= 1 or len(paths) < 64:
        results: Iterable = map(_hash_job, paths)
        yield from enumerate(_progress(results, len(paths), "hashing", progress))
        return
    chunk = max(1, min(64, len(paths) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers) as ex:
        yield from enumerate(_progress(ex.map(_hash_job, paths, chunksize=chunk), len(paths), "hashing", progress))


# --- near duplicates -------------------------------------------------------------------------------------------


def _near_content_pairs(
    coarse: np.ndarray, fine: np.ndarray, threshold: int, fine_threshold: int
) -> list[tuple[int, int, int, int, int]]:
    """(lo, hi, coarse distance, fine distance, transform index mapping lo onto hi) for distinct contents.

    The index holds each content's upright hash; every content queries it with its 8 orientation hashes, so a
    pair is found whichever way round the copy was flipped or turned (no reliance on a canonical form, which
    breaks for near matches: a 1-bit change can change which orientation is the minimum)."""
    n = len(coarse)
    if n < 2:
        return []
    index = HammingIndex(coarse[:, 0], threshold)
    qi, ci, dist = index.pairs(coarse.reshape(-1))
    j, t, i = qi // 8, qi % 8, ci  # orientation t of content j ~ upright content i
    keep = i != j
    j, t, i, dist = j[keep], t[keep], i[keep], dist[keep]
    if len(i) == 0:
        return []
    fd = fine_distance(fine[i, 0], fine[j, t])
    ok = fd <= fine_threshold
    j, t, i, dist, fd = j[ok], t[ok], i[ok], dist[ok], fd[ok]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    # T_t(j) ~ i. If lo == j, hi = i ~ T_t(lo): transform t. If lo == i, hi = j ~ T_t^-1(lo): the inverse.
    inverse = np.asarray(INVERSE)
    tr = np.where(lo == j, t, inverse[t])
    order = np.lexsort((tr, dist, fd, hi, lo))  # per pair: smallest fine, then coarse distance, then transform
    best: dict[tuple[int, int], tuple[int, int, int, int, int]] = {}
    for k in order:
        key = (int(lo[k]), int(hi[k]))
        if key not in best:
            best[key] = (key[0], key[1], int(dist[k]), int(fd[k]), int(tr[k]))
    return [best[k] for k in sorted(best)]


# --- the check -------------------------------------------------------------------------------------------------


def check_dataset(
    source: str | Path,
    *,
    threshold: int = DEFAULT_THRESHOLD,
    fine_threshold: int = DEFAULT_FINE_THRESHOLD,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    test_size: float = 0.2,
    seed: int = 0,
) -> CheckResult:
    """Check any dataset `discover` understands (Kaggle split folders, class folders, CSV manifest).

    Never stops at a bad file: every file ends up either hashed or in `unreadable` with its reason."""
    if not 0 <= threshold <= 32:
        raise ValueError(f"threshold must be 0..32 bits of {COARSE_BITS}, got {threshold}")
    if not 0 <= fine_threshold <= FINE_BITS:
        raise ValueError(f"fine threshold must be 0..{FINE_BITS} bits, got {fine_threshold}")
    workers = workers or os.cpu_count() or 1
    ds = discover(source, test_size=test_size, seed=seed)
    split_rank = {s: k for k, s in enumerate(SPLITS)}
    samples = sorted(ds.samples, key=lambda s: (split_rank.get(s.split, 99), str(s.path)))
    files = [FileRecord(str(s.path), s.label, s.split) for s in samples]
    result = CheckResult(str(source), ds.layout, files, [], [], list(ds.problems), threshold, fine_threshold)

    # 1. content keys (I/O bound; hashlib releases the GIL, so threads suffice)
    paths = [f.path for f in files]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        keys = list(_progress(ex.map(_key_job, paths), len(paths), "reading", progress and len(paths) > 200))
    for f, (key, err) in zip(files, keys):
        f.key, f.error = key, err

    # 2. perceptual hashes per distinct content, from the cache when possible
    cache = HashCache(cache_dir) if use_cache else None
    if cache is not None:
        result.cache_path = str(cache.path)
        if cache.warning:
            result.warnings.append(cache.warning)
    by_key: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(files):
        if f.key is not None:
            by_key[f.key].append(i)
    hashes: dict[str, ImageHashes | str] = {}
    todo: list[str] = []
    for key in by_key:
        cached = cache.get(key) if cache is not None else None
        if cached is None:
            todo.append(key)
        else:
            hashes[key] = cached
    result.from_cache = len(hashes)
    t0 = time.perf_counter()
    try:
        todo_paths = [files[by_key[k][0]].path for k in todo]
        for n_done, (k, res) in enumerate(_hash_all(todo_paths, workers, progress), start=1):
            value: ImageHashes | str = res if isinstance(res, str) else ImageHashes(res[0], res[1])
            hashes[todo[k]] = value
            if cache is not None:
                cache.put(todo[k], value)
                if n_done % _SAVE_EVERY == 0:
                    cache.save()
            result.hashed = n_done
    finally:
        result.hash_seconds = time.perf_counter() - t0
        if cache is not None:
            cache.save()
    for key, idx in by_key.items():
        h = hashes[key]
        if isinstance(h, str):
            for i in idx:
                files[i].error = h

    # 3. exact duplicates and near duplicates between distinct readable contents
    good = [k for k in by_key if not isinstance(hashes[k], str)]
    result.exact_groups = [by_key[k] for k in good if len(by_key[k]) > 1]
    result.exact_groups.sort(key=lambda g: g[0])
    if good:
        coarse = np.stack([hashes[k].coarse for k in good]).astype(np.uint64)  # type: ignore[union-attr]
        fine = np.stack([hashes[k].fine for k in good]).astype(np.uint8)  # type: ignore[union-attr]
        pairs: list[NearPair] = []
        for lo, hi, dist, fd, tr in _near_content_pairs(coarse, fine, threshold, fine_threshold):
            for a in by_key[good[lo]]:
                for b in by_key[good[hi]]:
                    # keep a < b (a sorts first: train before test); flipping the order inverts the transform
                    x, y, t = (a, b, tr) if a < b else (b, a, INVERSE[tr])
                    fx, fy = files[x], files[y]
                    pairs.append(NearPair(x, y, dist, fd, TRANSFORMS[t], fx.split != fy.split, fx.label != fy.label))
        result.near_pairs = sorted(pairs, key=lambda p: (p.a, p.b))
    return result
