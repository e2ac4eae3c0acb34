"""`waste-edge bench`: latency and throughput of every model x backend x batch, and of the study's pipeline.

How the numbers are made, and why:

* Input is a real-sized uint8 frame (default 640x480, BGR as OpenCV delivers it), so the fused graph's own
  preprocessing (resize, crop) is inside the timed call; the reference gets the same frames as RGB and does
  the study's PIL preprocessing, also timed. Timed unit: frame(s) -> probabilities.
* Rounds are interleaved (reference, variant 1, variant 2, ..., then again) and every row's speed-up is the
  median over rounds of (reference round mean / row round mean): on a shared, noisy machine the targets of
  one round see the same background load, so the ratio is far steadier than either time. Ratios are the
  claim; absolute times are reported beside them with the machine and its load average.
* torch and ONNX Runtime share the cores: both get `threads` intra-op threads, OpenMP is told to sleep
  instead of spinning (OMP_WAIT_POLICY=PASSIVE, when torch is not imported yet) and the harness pauses
  briefly between targets so one runtime's spinning workers do not steal the next one's cores.
* Load time = constructing the `Classifier` (or the reference) plus its first inference, which is what a
  user waits for. Size = the model file(s). Peak RSS (and GPU memory) come from a child process that loads
  only that target (`memory.py`): in-process peaks only ever grow and cannot be attributed to one row.
* Every row is measured inside its own try/except: a backend that is missing here (CUDA, TensorRT), a file
  that does not load or a run that fails becomes a row with status `failed` (or `skipped` where the format
  cannot use that backend at all) and the reason, and the other rows go on.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from waste_edge._io import Log, quiet
from waste_edge.bench.frames import synthetic_frames
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.backends.select import BACKEND_NAMES

_SETTLE_S = 0.05  # pause when switching targets: lets the previous runtime's spinning threads go idle


class BenchError(WasteEdgeError):
    """The benchmark cannot start at all (no model, bad options); per-row problems never raise."""


def parse_session_entry(text: str) -> tuple[str, str]:
    """'KEY=VALUE' (an ONNX Runtime session config entry) -> (KEY, VALUE); ValueError otherwise."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--session-config takes KEY=VALUE, got {text!r}")
    return key.strip(), value


@dataclass
class BenchConfig:
    """What to measure and how. The defaults are the CLI's: `models=None` is the embedded default model (none
    when references are given), `iters=None` is 10 calls per round (unless `seconds`), `threads=None` is the
    cores this process may use, for ONNX Runtime and torch alike."""

    models: list[Path] | None = None
    references: list[Path] = field(default_factory=list)
    backends: list[str] | None = None  # None: every backend this machine offers for each model
    batches: list[int] = field(default_factory=lambda: [1, 16])
    frame: tuple[int, int] = (640, 480)  # width, height
    warmup: int = 3
    iters: int | None = None  # per target per round (ignored when `seconds` is set)
    seconds: float | None = None  # measuring time per target and batch, split over the rounds
    rounds: int = 5
    threads: int | None = None
    session_config: dict[str, str] = field(default_factory=dict)  # ONNX Runtime session config entries (levers)
    data: Path | None = None  # dataset for an accuracy column
    data_limit: int | None = None
    camera: bool = False  # camera-loop overhead for each model (first loaded backend)
    camera_frames: int = 300
    memory: bool = True  # peak RSS in a child process per target
    profile: bool = False  # ORT per-op profile of each ONNX model on CPU, at every batch size
    progress: bool = True

    def __post_init__(self) -> None:
        if self.models is None:
            from waste_edge.runtime.model_path import resolve_model_path

            self.models = [] if self.references else [resolve_model_path(None)]
        if self.iters is None and self.seconds is None:
            self.iters = 10
        if self.threads is None:
            from waste_edge.bench.machine import usable_cores

            self.threads = usable_cores()
        if not self.models and not self.references:
            raise BenchError("nothing to benchmark: give --model (and optionally --reference)")
        if any(b < 1 for b in self.batches) or not self.batches:
            raise BenchError("batch sizes must be positive integers")
        if self.rounds < 1 or self.warmup < 0:
            raise BenchError("--rounds must be >= 1 and --warmup >= 0")
        if self.seconds is None and (self.iters is None or self.iters < 1):
            raise BenchError("--iters must be >= 1 (or give --seconds)")
        if self.seconds is not None and self.seconds <= 0:
            raise BenchError("--seconds must be positive")
        if self.backends is not None:
            bad = [b for b in self.backends if b not in BACKEND_NAMES]
            if bad:
                raise BenchError(f"unknown backend(s) {', '.join(bad)}: choose from {', '.join(BACKEND_NAMES)}")
        self.batches = sorted(set(self.batches))


@dataclass
class BenchRow:
    """One measured combination. The first fields are the JSON schema of the issue; the rest are extras."""

    model: str
    variant: str
    backend: str
    batch: int
    status: str = "ok"  # ok | failed | skipped
    error: str | None = None
    p50_ms: float | None = None  # latency of one call on `batch` frames
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    throughput: float | None = None  # images per second (median round)
    load_s: float | None = None
    size_mb: float | None = None
    peak_rss_mb: float | None = None
    speedup_vs_reference: float | None = None
    # extras
    std_ms: float | None = None
    ms_per_image: float | None = None
    fps: float | None = None  # = throughput
    accuracy: float | None = None
    gpu_mem_mb: float | None = None
    format: str = ""
    provider: str = ""
    encoder: str = ""
    path: str = ""
    reference: str | None = None  # the reference row this row's speed-up is against
    iters: int = 0  # timed calls, all rounds together
    rounds: int = 0
    round_ms: list[float] = field(default_factory=list)  # mean latency of each round, in order
    round_speedups: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchReport:
    machine: dict[str, Any]
    settings: dict[str, Any]
    rows: list[BenchRow]
    camera: list[Any] = field(default_factory=list)  # CameraOverhead
    profiles: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def any_measured(self) -> bool:
        return any(r.status == "ok" for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "settings": self.settings,
            "rows": [r.to_dict() for r in self.rows],
            "camera": [c.to_dict() for c in self.camera],
            "profiles": self.profiles,
            "notes": self.notes,
        }


# -- targets -------------------------------------------------------------------------------------------


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return text if isinstance(e, WasteEdgeError) and text else f"{type(e).__name__}: {text}" if text else type(e).__name__


class _Target:
    """A thing to time: the reference pipeline of a run, or one model file on one backend."""

    def __init__(self, kind: str, name: str, variant: str, backend: str, path: Path, fmt: str) -> None:
        self.kind = kind  # reference | model
        self.name = name
        self.variant = variant
        self.backend = backend
        self.path = path
        self.format = fmt
        self.provider = ""
        self.encoder = ""
        self.head_sha256 = ""
        self.obj: Any = None
        self.load_s: float | None = None
        self.size_mb: float | None = None
        self.peak_rss_mb: float | None = None
        self.gpu_mem_mb: float | None = None
        self.accuracy: float | None = None
        self.error: str | None = None
        self.status = "ok"
        self.reference: "_Target | None" = None
        self.batch_errors: dict[int, str] = {}

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def fail(self, status: str, error: str) -> None:
        self.status, self.error = status, error
        self.close()

    def call(self, inputs: Any) -> Any:
        """Frames -> probabilities: BGR NHWC array for a fused model, list of RGB frames for the reference."""
        return self.obj.predict_proba(inputs)

    def close(self) -> None:
        obj, self.obj = self.obj, None
        if obj is not None and hasattr(obj, "close"):
            try:
                obj.close()
            except Exception:  # closing must never hide a result
                pass


def _file_size_mb(path: Path) -> float | None:
    from waste_edge.runtime.backends.engine_sidecar import sidecar_path

    files = [path, sidecar_path(path), Path(str(path) + ".data")]  # model, engine sidecar, ONNX external data
    total = sum(f.stat().st_size for f in dict.fromkeys(files) if f.is_file())
    return total / 1e6 if total else None


def _file_metadata(path: Path) -> Any:
    """The model's metadata without loading it for inference (for rows whose backend could not load it)."""
    from waste_edge.runtime.model_info import read_metadata

    try:
        return read_metadata(path)
    except Exception:
        return None


def _model_targets(path: Path, backends: Sequence[str] | None, threads: int | None, first_input: np.ndarray, log: Log,
                   session_config: dict[str, str] | None = None) -> list[_Target]:
    """One target per backend for a model file, loaded (or failed / skipped with the reason)."""
    from waste_edge.runtime.classifier import Classifier
    from waste_edge.runtime.formats import format_for_path
    from waste_edge.runtime.backends.select import available_backends, candidate_backends

    name = path.name
    try:
        fmt = format_for_path(path)
        if not path.is_file():
            raise WasteEdgeError(f"{path}: model file not found")
    except Exception as e:
        t = _Target("model", name, "?", ",".join(backends or ["auto"]), path, path.suffix.lstrip("."))
        t.fail("failed", _one_line(e))
        return [t]
    if backends is None:
        wanted = available_backends(path)
        if not wanted:
            t = _Target("model", name, "?", "auto", path, fmt.name)
            try:
                candidate_backends(path, "auto")
                t.fail("failed", "no backend available")
            except Exception as e:
                t.fail("failed", _one_line(e))
            return [t]
    else:
        wanted = list(backends)
    targets = []
    for backend in wanted:
        t = _Target("model", name, "?", backend, path, fmt.name)
        t.size_mb = _file_size_mb(path)
        targets.append(t)
        if backend not in fmt.backends:
            t.fail("skipped", f"a {fmt.suffix} file runs on {', '.join(fmt.backends)}, not on {backend}")
            continue
        try:
            t0 = time.perf_counter()
            clf = Classifier(path, backend, threads=threads, session_config=session_config or None)
            t.obj = clf
            clf.predict_proba(first_input)
            t.load_s = time.perf_counter() - t0
            t.provider = clf.provider
            t.variant = clf.metadata.variant
            t.encoder = clf.metadata.encoder
            t.head_sha256 = clf.metadata.head_sha256
            log(f"loaded {name} on {backend} ({clf.provider}) in {t.load_s:.2f} s")
        except Exception as e:
            t.fail("failed", _one_line(e))
            log(f"{name} on {backend}: failed ({t.error})")
    known = next((t for t in targets if t.encoder), None)
    meta = None if known else _file_metadata(path)
    for t in targets:
        if not t.encoder:
            if known is not None:
                t.variant, t.encoder, t.head_sha256 = known.variant, known.encoder, known.head_sha256
            elif meta is not None:
                t.variant, t.encoder, t.head_sha256 = meta.variant, meta.encoder, meta.head_sha256
    return targets


def _reference_target(run_dir: Path, threads: int | None, first_input: list[np.ndarray], log: Log) -> _Target:
    t = _Target("reference", run_dir.name, "reference", "cpu", run_dir, "pytorch+sklearn")
    t.provider = "torch"
    try:
        from waste_edge.train.runs import open_run

        t0 = time.perf_counter()
        ref = open_run(run_dir).reference(threads or 2)
        t.obj = ref
        ref.predict_proba(first_input)
        t.load_s = time.perf_counter() - t0
        t.size_mb = ref.size_mb()
        t.encoder, t.head_sha256 = ref.encoder_id, ref.head_sha256
        log(f"loaded reference {run_dir} ({ref.encoder_id}) in {t.load_s:.2f} s")
    except Exception as e:
        t.fail("failed", _one_line(e))
        log(f"reference {run_dir}: failed ({t.error})")
    return t


def _match_references(models: list[_Target], refs: list[_Target], notes: list[str]) -> None:
    """Each model's speed-up is against the reference run it was exported from (same encoder and head)."""
    for m in models:
        exact = [r for r in refs if r.encoder and r.encoder == m.encoder and r.head_sha256 == m.head_sha256]
        if exact:
            m.reference = exact[0]
        elif len(refs) == 1 and m.encoder:
            m.reference = refs[0]
            note = (f"{m.name} ({m.encoder}) was not exported from reference run {refs[0].name} "
                    f"({refs[0].encoder or 'not loaded'}): its speed-up compares different models")
            if note not in notes:
                notes.append(note)


# -- measurement -----------------------------------------------------------------------------------------


def _timed_calls(t: _Target, inputs: Any, iters: int | None, seconds: float | None) -> list[float]:
    lat: list[float] = []
    perf = time.perf_counter
    if seconds is None:
        for _ in range(iters or 1):
            t0 = perf()
            t.call(inputs)
            lat.append((perf() - t0) * 1e3)
        return lat
    end = perf() + seconds
    while True:
        t0 = perf()
        t.call(inputs)
        t1 = perf()
        lat.append((t1 - t0) * 1e3)
        if t1 >= end:
            return lat


def _row_for(t: _Target, batch: int) -> BenchRow:
    return BenchRow(
        model=t.name, variant=t.variant, backend=t.backend, batch=batch, status=t.status, error=t.error,
        load_s=t.load_s, size_mb=t.size_mb, peak_rss_mb=t.peak_rss_mb, gpu_mem_mb=t.gpu_mem_mb, accuracy=t.accuracy,
        format=t.format, provider=t.provider, encoder=t.encoder, path=str(t.path),
        reference=t.reference.name if t.reference is not None else (t.name if t.kind == "reference" else None),
    )


def _fill_stats(row: BenchRow, rounds: list[list[float]], batch: int) -> None:
    pooled = np.array([x for r in rounds for x in r], dtype=np.float64)
    row.p50_ms, row.p90_ms, row.p99_ms = (float(v) for v in np.percentile(pooled, [50, 90, 99]))
    row.mean_ms, row.std_ms = float(pooled.mean()), float(pooled.std())
    row.round_ms = [float(np.mean(r)) for r in rounds]
    mid = float(statistics.median(row.round_ms))
    row.ms_per_image = mid / batch
    row.throughput = row.fps = 1000.0 * batch / mid
    row.iters, row.rounds = len(pooled), len(rounds)


def _measure_batch(targets: list[_Target], batch: int, inputs: dict[str, Any], cfg: BenchConfig, bar: Any, log: Log) -> dict[int, list[list[float]]]:
    """Warm up, then interleaved rounds; returns per target (by index) the latencies of each round."""
    active = [i for i, t in enumerate(targets) if t.ok]
    per_round = cfg.seconds / cfg.rounds if cfg.seconds is not None else None
    out: dict[int, list[list[float]]] = {i: [] for i in active}
    for i in list(active):
        t = targets[i]
        try:
            for _ in range(cfg.warmup):
                t.call(inputs[t.kind])
        except Exception as e:
            t.batch_errors[batch] = _one_line(e)
            active.remove(i)
            log(f"{t.name} on {t.backend}, batch {batch}: failed in warm-up ({t.batch_errors[batch]})")
    for r in range(cfg.rounds):
        for i in list(active):
            t = targets[i]
            time.sleep(_SETTLE_S)
            try:
                out[i].append(_timed_calls(t, inputs[t.kind], cfg.iters, per_round))
            except Exception as e:
                t.batch_errors[batch] = _one_line(e)
                active.remove(i)
                log(f"{t.name} on {t.backend}, batch {batch}: failed in round {r + 1} ({t.batch_errors[batch]})")
            if bar is not None:
                bar.update(1)
    return out


# -- optional measurements -------------------------------------------------------------------------------


def _measure_memory(targets: list[_Target], cfg: BenchConfig, notes: list[str], log: Log) -> None:
    from waste_edge.bench.memory import measure_in_child

    for t in targets:
        if not t.ok:
            continue
        spec = {"kind": t.kind, "path": str(t.path), "backend": t.backend, "threads": cfg.threads,
                "batch": max(cfg.batches), "frame": list(cfg.frame), "iters": 2, "session_config": cfg.session_config}
        try:
            res = measure_in_child(spec)
            t.peak_rss_mb, t.gpu_mem_mb = res.get("peak_rss_mb"), res.get("gpu_mem_mb")
            log(f"memory {t.name} on {t.backend}: peak RSS {t.peak_rss_mb:.0f} MB")
        except Exception as e:
            notes.append(f"peak RSS of {t.name} on {t.backend} not measured: {_one_line(e)}")


def _measure_accuracy(targets: list[_Target], cfg: BenchConfig, notes: list[str], log: Log) -> dict[str, Any]:
    from waste_edge.data.decode import DecodeError, load_rgb_array
    from waste_edge.data.discovery import discover
    from waste_edge.data.sample import seeded_sample

    ds = discover(cfg.data)
    samples = seeded_sample(ds.split("test") or ds.samples, cfg.data_limit or None)
    images: list[tuple[np.ndarray, str]] = []
    unreadable = 0
    for s in samples:
        try:
            images.append((load_rgb_array(s.path), s.label))
        except DecodeError:
            unreadable += 1
    if not images:
        raise BenchError(f"{cfg.data}: no readable images for the accuracy column")
    for t in targets:
        if not t.ok:
            continue
        try:
            classes = list(t.obj.classes)
            correct = 0
            for img, label in _progress(images, cfg.progress and len(images) > 50, f"accuracy {t.name} ({t.backend})"):
                p = t.obj.predict_proba([img]) if t.kind == "reference" else t.obj.predict_proba(img, "RGB")
                correct += int(classes[int(np.argmax(p[0]))] == label)
            t.accuracy = correct / len(images)
            log(f"accuracy {t.name} on {t.backend}: {t.accuracy:.4f} ({len(images)} images)")
        except Exception as e:
            notes.append(f"accuracy of {t.name} on {t.backend} not measured: {_one_line(e)}")
    return {"data": str(cfg.data), "images": len(images), "unreadable": unreadable, "split": "test" if ds.split("test") else "all"}


def _progress(items: Sequence[Any], enabled: bool, desc: str) -> Any:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img", leave=False, file=sys.stderr)


# -- the run ---------------------------------------------------------------------------------------------


def run_bench(cfg: BenchConfig, log: Log | None = None) -> BenchReport:
    """Measure every target; never raises for one row's failure (see the module docstring)."""
    say: Log = log or quiet
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch's OpenMP starts
    from waste_edge.bench.machine import load_average, machine_info

    machine = machine_info()
    notes: list[str] = []
    w, h = cfg.frame
    big = max(cfg.batches)
    bgr = synthetic_frames(big, w, h)
    rgb = [np.ascontiguousarray(f[..., ::-1]) for f in bgr]
    first_bgr, first_rgb = bgr[: cfg.batches[0]], rgb[: cfg.batches[0]]

    refs = [_reference_target(Path(r), cfg.threads, first_rgb, say) for r in cfg.references]
    models: list[_Target] = []
    for m in cfg.models:
        models.extend(_model_targets(Path(m), cfg.backends, cfg.threads, first_bgr, say, cfg.session_config))
    _match_references(models, [r for r in refs if r.ok], notes)
    targets = refs + models

    if cfg.memory:
        _measure_memory(targets, cfg, notes, say)
    accuracy_info = None
    if cfg.data is not None:
        try:
            accuracy_info = _measure_accuracy(targets, cfg, notes, say)
        except Exception as e:
            notes.append(f"accuracy not measured: {_one_line(e)}")

    rows: list[BenchRow] = []
    bar = None
    n_units = sum(1 for t in targets if t.ok) * len(cfg.batches) * cfg.rounds
    if cfg.progress and n_units:
        from tqdm import tqdm

        bar = tqdm(total=n_units, desc="bench", unit="round", file=sys.stderr, leave=False)
    try:
        for batch in cfg.batches:
            inputs = {"model": np.ascontiguousarray(bgr[:batch]), "reference": rgb[:batch]}
            measured = _measure_batch(targets, batch, inputs, cfg, bar, say)
            by_target: dict[int, BenchRow] = {}
            for i, t in enumerate(targets):
                row = _row_for(t, batch)
                if t.ok and batch in t.batch_errors:
                    row.status, row.error = "failed", t.batch_errors[batch]
                elif t.ok and measured.get(i):
                    _fill_stats(row, measured[i], batch)
                by_target[id(t)] = row
                rows.append(row)
            for t in targets:
                row = by_target[id(t)]
                ref = t if t.kind == "reference" else t.reference
                ref_row = by_target.get(id(ref)) if ref is not None else None
                if row.status != "ok" or ref_row is None or ref_row.status != "ok" or not row.round_ms:
                    continue
                pairs = [a / b for a, b in zip(ref_row.round_ms, row.round_ms) if b > 0]
                if pairs:
                    row.round_speedups = [round(p, 4) for p in pairs]
                    row.speedup_vs_reference = float(statistics.median(pairs))
    finally:
        if bar is not None:
            bar.close()

    profiles: list[dict[str, Any]] = []
    if cfg.profile:
        from waste_edge.bench.profile import profile_ops

        for t in models:
            if not (t.ok and t.format == "onnx" and t.backend == "cpu"):
                continue
            for batch in cfg.batches:
                try:
                    ops = profile_ops(t.path, bgr[:batch], threads=cfg.threads)
                    profiles.append({"model": t.name, "variant": t.variant, "backend": t.backend, "batch": batch, "ops": ops})
                except Exception as e:
                    notes.append(f"profile of {t.name} at batch {batch} failed: {_one_line(e)}")

    camera: list[Any] = []
    if cfg.camera:
        from waste_edge.bench.camera_overhead import CameraOverhead, measure_camera_overhead

        cam_frames = synthetic_frames(cfg.camera_frames, w, h, seed=1)
        seen: set[Path] = set()
        for t in models:
            if not t.ok or t.path in seen:
                continue
            seen.add(t.path)
            try:
                camera.append(measure_camera_overhead(t.obj, cam_frames, rounds=cfg.rounds, model=t.name, log=say))
            except Exception as e:
                camera.append(CameraOverhead(model=t.name, variant=t.variant, backend=t.backend, status="failed", error=_one_line(e)))

    for t in targets:
        t.close()
    machine["load_average_end"] = load_average()
    settings = {
        "frame": f"{w}x{h}", "frame_channel_order": "BGR (fused models), RGB (reference)", "batches": cfg.batches,
        "backends": cfg.backends or "available", "warmup": cfg.warmup, "iters": cfg.iters if cfg.seconds is None else None,
        "seconds": cfg.seconds, "rounds": cfg.rounds, "threads": cfg.threads, "session_config": cfg.session_config,
        "models": [str(m) for m in cfg.models], "references": [str(r) for r in cfg.references],
        "speedup": "median over rounds of reference round mean / row round mean, same batch (rounds interleaved)",
        "throughput": "batch / median round mean latency",
        "peak_rss": "child process running only that target" if cfg.memory else "not measured",
    }
    if accuracy_info:
        settings["accuracy"] = accuracy_info
    return BenchReport(machine=machine, settings=settings, rows=rows, camera=camera, profiles=profiles, notes=notes)
