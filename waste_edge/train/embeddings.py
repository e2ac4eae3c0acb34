"""Embedding extraction with an on-disk cache keyed by encoder and file content.

Extracting CLIP embeddings for 250K images takes hours on a small machine, and runs get interrupted. The
cache stores features per (encoder weights + preprocessing, sha256 of the file's bytes) in shards written
atomically as extraction goes, so an interrupted run resumes where it stopped, a renamed or moved file is
still a hit, and a second run over the same data extracts nothing.

Where the features are computed is a `FeatureRunner`: `TorchRunner` here (CPU, or a CUDA GPU with pinned
memory, DataLoader worker processes and optional fp16 autocast), or `waste_edge.scale.extract.RayFeatureRunner`
on a Ray cluster. Every runner fills the same cache. fp32 features from CPU and GPU are the same embeddings
(cosine >= 0.9999, TF32 off) and share a cache key; fp16-autocast features get a key of their own, so a run
never mixes the two without saying so.
"""

from __future__ import annotations

import io
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from waste_edge._io import atomic_write_bytes, cache_dir as cache_root, file_sha256
from waste_edge.data.decode import MAX_IMAGE_FILE_BYTES, DecodeError, load_rgb
from waste_edge.data.discovery import Sample
from waste_edge.errors import WasteEdgeError

TORCH_DEVICES = ("auto", "cpu", "cuda")


class DeviceError(WasteEdgeError):
    """A torch device that is not there (cuda without a GPU), or AMP where it does not apply."""


def default_cache_dir() -> Path:
    return cache_root("embeddings")


class EmbeddingCache:
    """Shards of (content sha256 -> feature vector) under <root>/<encoder cache key>/, npz without pickles."""

    def __init__(self, root: str | Path, encoder_key: str, shard_size: int = 256, dim: int | None = None) -> None:
        self.dir = Path(root) / encoder_key
        self.shard_size = shard_size
        self.dim = dim
        self._mem: dict[str, np.ndarray] = {}
        self._pending: dict[str, np.ndarray] = {}
        self.shards_written = 0
        self.rejected = 0  # cached vectors not trusted (torn / foreign shards, wrong width, NaN / inf): recomputed
        if self.dir.is_dir():
            for shard in sorted(self.dir.glob("shard-*.npz")):
                self._load(shard)

    def _load(self, shard: Path) -> None:
        """Take from a shard only what a fresh extraction could have written: a cache is a file anyone can
        edit or truncate, and a wrong vector would silently train and score a head (issue 12)."""
        try:
            with np.load(shard, allow_pickle=False) as z:
                keys, feats = z["keys"], z["features"]
                n_keys = len(keys)
                usable = (keys.ndim == 1 and feats.ndim == 2 and feats.shape[0] == n_keys and feats.dtype.kind == "f"
                          and (self.dim is None or feats.shape[1] == self.dim))
                if not usable:
                    self.rejected += max(n_keys, 1)
                    return
                finite = np.isfinite(feats).all(axis=1)
                good = [i for i, k in enumerate(keys.tolist()) if finite[i] and isinstance(k, str) and len(k) == 64]
                self.rejected += n_keys - len(good)
                self._mem.update((keys[i].item(), feats[i].astype(np.float32)) for i in good)
        except Exception:  # a torn or foreign file: ignore it, its entries are recomputed
            self.rejected += 1

    def __len__(self) -> int:
        return len(self._mem)

    def __contains__(self, key: str) -> bool:
        return key in self._mem

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


# -- where features are computed --------------------------------------------------------------------------


class FeatureRunner(Protocol):
    """Computes features for samples missing from the cache.

    `run` yields, batch by batch and in any order, (index into `samples`, feature or error text) pairs.
    `precision` names the numerics ("fp32" or "amp-fp16"): it is part of the cache key. `recover` folds into
    the cache whatever an interrupted earlier run left outside it (Ray's Parquet shards) and returns how many.
    `name` is what the run card records. A runner is a context manager: a Ray runner holds one connection
    for the extractions made inside its `with`.
    """

    name: str
    precision: str

    def __enter__(self) -> "FeatureRunner": ...

    def __exit__(self, *exc: Any) -> None: ...

    def recover(self, cache: EmbeddingCache) -> int: ...

    def run(self, encoder: Any, samples: Sequence[Sample], hashes: Sequence[str], batches: list[list[int]], cache: EmbeddingCache) -> Iterator[list[tuple[int, Any]]]: ...


def resolve_device(device: str) -> str:
    """auto -> cuda when torch sees a GPU, else cpu; an explicit cuda without one is a one-line error."""
    import torch

    if device not in TORCH_DEVICES:
        raise DeviceError(f"unknown torch device {device!r}: use one of {', '.join(TORCH_DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise DeviceError(f"--torch-device cuda: torch sees no CUDA GPU (torch {torch.__version__}, {build})")
    return device


class PrepareImage:
    """Decode + the encoder's own preprocessing of one sample -> (3 x S x S float32, None) or (None, reason).
    A small picklable object, so DataLoader workers can run it in other processes."""

    def __init__(self, encoder: Any) -> None:
        self.transform = encoder.reference_transform
        self.spec = encoder.spec

    def __call__(self, path: str | Path) -> tuple[np.ndarray | None, str | None]:
        from waste_edge.train.preprocess import encoder_input

        try:
            img = load_rgb(path)
        except DecodeError as e:
            return None, str(e)
        try:
            return encoder_input(img, self.spec, self.transform), None
        except Exception as e:  # a transform failing on a hostile image costs that image, not the run
            return None, f"cannot preprocess: {type(e).__name__}: {e}"


class _ImageDataset:
    """torch Dataset over (index, path): workers decode and preprocess, the main process runs the encoder."""

    def __init__(self, paths: Sequence[Path], prepare: PrepareImage) -> None:
        self.paths, self.prepare = list(paths), prepare

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None]:
        x, err = self.prepare(self.paths[i])
        return i, x, err


def _collate(items: list[tuple[int, np.ndarray | None, str | None]]) -> tuple[list[int], Any, list[tuple[int, str]]]:
    import torch

    ok = [(i, x) for i, x, _ in items if x is not None]
    bad = [(i, err) for i, x, err in items if x is None]
    tensor = torch.from_numpy(np.stack([x for _, x in ok])) if ok else None
    return [i for i, _ in ok], tensor, bad  # type: ignore[return-value]


class _BatchSampler:
    """Hands DataLoader our precomputed batches (the same ones every runner uses)."""

    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class TorchRunner:
    """Features in this process with PyTorch, on CPU or a CUDA GPU.

    CPU: decoding in `workers` threads, two batches ahead. CUDA: a DataLoader with `workers` processes and
    pinned memory, host-to-device copies overlapping compute, TF32 off in fp32 (so GPU features match CPU
    ones), optional fp16 autocast (`amp`). `loader` forces "threads" or "processes" either way.
    """

    device: str = "auto"
    amp: bool = False
    workers: int = 2
    threads: int | None = None
    loader: str = "auto"  # auto | threads | processes
    name = "torch"

    def __post_init__(self) -> None:
        if self.device not in TORCH_DEVICES:
            raise DeviceError(f"unknown torch device {self.device!r}: use one of {', '.join(TORCH_DEVICES)}")
        if self.amp and self.device == "cpu":
            raise DeviceError("--amp is fp16 autocast on a CUDA GPU; on --torch-device cpu it does not apply")
        if self.loader not in ("auto", "threads", "processes"):
            raise ValueError(f"loader must be auto, threads or processes, got {self.loader!r}")

    @property
    def precision(self) -> str:
        return "amp-fp16" if self.amp else "fp32"

    def __enter__(self) -> "TorchRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def recover(self, cache: EmbeddingCache) -> int:
        return 0

    def resolved_device(self) -> str:
        dev = resolve_device(self.device)
        if self.amp and dev != "cuda":
            raise DeviceError("--amp needs a CUDA GPU (fp16 autocast); torch sees none here: drop --amp")
        return dev

    def run(self, encoder: Any, samples: Sequence[Sample], hashes: Sequence[str], batches: list[list[int]], cache: EmbeddingCache) -> Iterator[list[tuple[int, Any]]]:
        import torch

        dev = self.resolved_device()
        if self.threads:
            torch.set_num_threads(self.threads)
        prepare = PrepareImage(encoder)
        paths = [s.path for s in samples]
        use_processes = self.loader == "processes" or (self.loader == "auto" and dev == "cuda")
        module = encoder.module
        saved_tf32 = _set_tf32(False) if dev == "cuda" else None
        if dev == "cuda":
            module.to(dev)
        try:
            stream = self._process_batches(paths, prepare, batches, dev) if use_processes else self._thread_batches(paths, prepare, batches)
            with torch.inference_mode():
                for idx, tensor, bad in stream:
                    out: list[tuple[int, Any]] = list(bad)
                    if tensor is not None:
                        feats = encode_batch(module, tensor, dev, self.amp)
                        out.extend(zip(idx, feats))
                    yield out
        finally:
            if dev == "cuda":
                module.to("cpu")
                _set_tf32(*saved_tf32)  # type: ignore[misc]

    def _thread_batches(self, paths: Sequence[Path], prepare: PrepareImage, batches: list[list[int]]) -> Iterator[tuple[list[int], Any, list[tuple[int, str]]]]:
        with ThreadPoolExecutor(max_workers=max(1, self.workers), thread_name_prefix="decode") as pool:
            for idx, prepared in zip(batches, _prefetch(pool, prepare, paths, batches)):
                yield _collate([(i, x, err) for i, (x, err) in zip(idx, prepared)])

    def _process_batches(self, paths: Sequence[Path], prepare: PrepareImage, batches: list[list[int]], dev: str) -> Iterator[tuple[list[int], Any, list[tuple[int, str]]]]:
        from torch.utils.data import DataLoader

        loader = DataLoader(_ImageDataset(paths, prepare), batch_sampler=_BatchSampler(batches), collate_fn=_collate,
                            num_workers=max(0, self.workers), pin_memory=dev == "cuda",
                            prefetch_factor=2 if self.workers > 0 else None)
        yield from loader


def _set_tf32(matmul: bool, cudnn: bool | None = None) -> tuple[bool, bool]:
    """Switch TF32 for matmuls and cuDNN convolutions; returns the previous settings."""
    import torch

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = matmul if cudnn is None else cudnn
    return before


def encode_batch(module: Any, batch: Any, device: str, amp: bool) -> np.ndarray:
    """One forward pass: NCHW float32 CPU tensor in, [N, D] float32 numpy out (fp16 autocast on CUDA if `amp`)."""
    import torch

    if device == "cuda":
        batch = batch.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            out = module(batch)
        return out.float().cpu().numpy()
    return module(batch).float().numpy()


def _prefetch(pool: ThreadPoolExecutor, prepare: Callable, paths: Sequence[Path], batches: list[list[int]]) -> Iterator[list]:
    """Decode the next batches in the pool while torch runs the current one, two batches ahead at most,
    so memory stays bounded on a 250K-image dataset."""
    queue: deque = deque()
    for idx in batches:
        queue.append([pool.submit(prepare, paths[i]) for i in idx])
        if len(queue) > 2:
            yield [f.result() for f in queue.popleft()]
    while queue:
        yield [f.result() for f in queue.popleft()]


def cache_key(encoder: Any, precision: str) -> str:
    """fp32 features from any device share the encoder's key; other numerics get their own."""
    key = encoder.cache_key()
    return key if precision == "fp32" else f"{key}-{precision}"


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
    device: str = "cpu",
    amp: bool = False,
    runner: FeatureRunner | None = None,
    log: Callable[[str], None] | None = None,
) -> Embeddings:
    """Features for every readable sample; unreadable ones are returned in `failed`, never dropped silently.

    `log` gets one line: how many were extracted, reused from the cache and unreadable.

    `runner` computes what the cache lacks (default: `TorchRunner(device, amp, workers, threads)`)."""
    runner = runner or TorchRunner(device=device, amp=amp, workers=workers, threads=threads)
    cache = EmbeddingCache(cache_dir or default_cache_dir(), cache_key(encoder, runner.precision), dim=int(encoder.dim))
    if cache.rejected and log is not None:
        log(f"{desc}: {cache.rejected} cached embedding(s) in {cache.dir} were unusable (torn shard, wrong width or not finite): extracting again")
    runner.recover(cache)
    pool = ThreadPoolExecutor(max_workers=max(1, workers))

    def hash_one(s: Sample) -> tuple[str | None, str | None]:
        try:
            return file_sha256(s.path, max_bytes=MAX_IMAGE_FILE_BYTES), None  # regular files only: never /dev/urandom
        except OSError as e:
            return None, f"cannot read file: {e.strerror or e}"

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
        sub = [samples[i] for i in todo]
        sub_hashes = [hashed[i][0] for i in todo]
        batches = [list(range(j, min(j + batch_size, len(todo)))) for j in range(0, len(todo), batch_size)]
        for results in (runner.run(encoder, sub, sub_hashes, batches, cache) if todo else ()):  # type: ignore[arg-type]
            for j, res in results:
                i = todo[j]
                if isinstance(res, str):
                    failed[i] = res
                else:
                    feats[i] = res
                    cache.put(hashed[i][0], res)  # type: ignore[arg-type]
            bar.update(len(results))
            if on_batch:
                on_batch(len(results))
        bar.close()
    finally:
        cache.flush()
        pool.shutdown(wait=False, cancel_futures=True)
    order = sorted(feats)
    dim = int(encoder.dim)
    emb = Embeddings(
        features=np.stack([feats[i] for i in order]).astype(np.float32) if order else np.zeros((0, dim), np.float32),
        samples=[samples[i] for i in order],
        hashes=[hashed[i][0] for i in order],  # type: ignore[misc]
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
