"""`waste-edge bench`: latency and throughput of every model x backend x batch, and of the study's pipeline.

How the numbers are made, and why:

* Every target (the reference pipeline of a run; each model on each backend) runs in a worker process of
  its own (`worker.py`), spawned once, at its own defaults: the reference with PyTorch's default thread
  count and OpenMP behaviour, each model with ONNX Runtime's session defaults as the runtime's `Classifier`
  sets them. Nothing process-wide is changed for anyone: a benchmark that exists to say how much faster we
  are must not slow down what it compares against. Explicit levers (`threads`, ONNX Runtime
  `session_config` entries) apply only where asked, and every row prints the settings it ran with.
* All workers get the same frames from the parent: real-sized uint8 frames (default 640x480, BGR as OpenCV
  delivers them; the reference gets them as RGB and does the study's PIL preprocessing), so preprocessing
  is inside the timed call. Timed unit: frame(s) -> probabilities.
* Rounds are interleaved (reference, variant 1, variant 2, ..., then again): the parent asks one worker at a
  time for a round of calls, waits until that worker's threads have stopped using the CPU (spinning thread
  pools keep running after a call returns), then asks the next. Every row's speed-up is the median over
  rounds of (reference round mean / row round mean): on a shared, noisy machine the targets of one round see
  the same background load, so the ratio is far steadier than either time. Ratios are the claim; absolute
  times are reported beside them with the machine and its load average.
* `check_alone`: each reference is also loaded alone in two fresh processes (`alone.py`, no code shared with
  the worker) that take turns next to the reference's in every round of the first batch size, so a reader
  sees that the harness did not handicap it, against the noise floor of two identical processes
  (`_AloneCheck` says why it is done this way).
* Load time = constructing the target plus its first inference, one worker at a time. Peak RSS is each
  worker's own high-water mark after the timed rounds (largest batch), taken before the accuracy pass:
  a process that holds only that target, which is the figure an edge user needs.
* Every row is measured inside its own try/except: a backend that is missing here (CUDA, TensorRT), a file
  that does not load, a run that fails or a worker that dies becomes a row with status `failed` (or
  `skipped` where the format cannot use that backend at all) and the reason, and the other rows go on.
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
from waste_edge.bench.worker import file_size_mb, one_line
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.backends.select import BACKEND_NAMES

_LOAD_TIMEOUT_S = 900.0
_CALL_TIMEOUT_S = 1800.0


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
    when references are given), `iters=None` is 10 calls per round (unless `seconds`), `threads=None` leaves
    each runtime at its own default (PyTorch's, ONNX Runtime's): a lever only where asked."""

    models: list[Path] | None = None
    references: list[Path] = field(default_factory=list)
    backends: list[str] | None = None  # None: every backend this machine offers for each model
    batches: list[int] = field(default_factory=lambda: [1, 16])
    frame: tuple[int, int] = (640, 480)  # width, height
    warmup: int = 3
    iters: int | None = None  # per target per round (ignored when `seconds` is set)
    seconds: float | None = None  # measuring time per target and batch, split over the rounds
    rounds: int = 5
    threads: int | None = None  # None: each runtime's own default (PyTorch's, ONNX Runtime's)
    session_config: dict[str, str] = field(default_factory=dict)  # ONNX Runtime session config entries (levers)
    data: Path | None = None  # dataset for an accuracy column
    data_limit: int | None = None
    camera: bool = False  # camera-loop overhead for each model (first loaded backend)
    camera_frames: int = 300
    memory: bool = True  # peak RSS of each worker
    profile: bool = False  # ORT per-op profile of each ONNX model on CPU, at every batch size
    check_alone: bool = False  # time each reference again alone in a fresh process
    progress: bool = True

    def __post_init__(self) -> None:
        if self.models is None:
            from waste_edge.runtime.model_path import resolve_model_path

            self.models = [] if self.references else [resolve_model_path(None)]
        if self.iters is None and self.seconds is None:
            self.iters = 10
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
    settings: dict[str, Any] = field(default_factory=dict)  # threads, OpenMP policy, ORT session options it ran with
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
    camera: list[Any] = field(default_factory=list)  # CameraOverhead dicts
    profiles: list[dict[str, Any]] = field(default_factory=list)
    reference_check: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def any_measured(self) -> bool:
        return any(r.status == "ok" for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "settings": self.settings,
            "rows": [r.to_dict() for r in self.rows],
            "camera": list(self.camera),
            "profiles": self.profiles,
            "reference_check": self.reference_check,
            "notes": self.notes,
        }


# -- workers -------------------------------------------------------------------------------------------


class WorkerDied(WasteEdgeError):
    """A worker process exited (or stopped answering) in the middle of a command."""


class Worker:
    """The parent's handle on one worker process: send a command, wait for its reply.

    The worker is a fresh interpreter (`python -m waste_edge.bench.worker`), not a multiprocessing child: it
    inherits no threads or runtimes and never re-imports the caller's main script. Commands and replies travel
    as pickled messages over two pipes between these two processes of ours (numpy frames included)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import json
        import subprocess
        from multiprocessing.connection import Connection

        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        cmd = [sys.executable, "-m", "waste_edge.bench.worker", str(to_child_r), str(from_child_w), json.dumps(spec)]
        try:
            self.process = subprocess.Popen(cmd, pass_fds=(to_child_r, from_child_w), stdout=2)  # stdout stays the report's
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._send, self._recv = Connection(to_child_w, readable=False), Connection(from_child_r, writable=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def ask(self, cmd: str, timeout: float = _CALL_TIMEOUT_S, **args: Any) -> Any:
        try:
            self._send.send({"cmd": cmd, **args})
            if not self._recv.poll(timeout):
                self.kill()
                raise WorkerDied(f"worker gave no answer to {cmd!r} within {timeout:.0f} s")
            reply = self._recv.recv()
        except (EOFError, OSError):
            code = self.process.wait(timeout=5) if self.process.poll() is None else self.process.returncode
            raise WorkerDied(f"worker process exited during {cmd!r} (exit code {code})") from None
        if "error" in reply:
            raise WasteEdgeError(reply["error"])
        return reply["ok"]

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.ask("close", timeout=30)
            except WasteEdgeError:
                pass
        try:
            self.process.wait(timeout=10)
        except Exception:
            self.kill()
        self._send.close()
        self._recv.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)


def _cpu_ns(pid: int) -> int | None:
    """CPU time used so far by every thread of `pid` (Linux schedstat, nanoseconds); None where unknown."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total


def wait_until_idle(pids: Sequence[int | None], *, poll_s: float = 0.005, busy_share: float = 0.1, max_wait_s: float = 1.0) -> float:
    """Wait until the processes use less than `busy_share` of one core (spinning thread pools have gone to
    sleep), at most `max_wait_s`; returns the seconds waited. Without /proc, a fixed short pause."""
    live = [p for p in pids if p]
    t0 = time.perf_counter()
    last = [_cpu_ns(p) for p in live]
    if not live or any(v is None for v in last):
        time.sleep(0.05)
        return time.perf_counter() - t0
    while time.perf_counter() - t0 < max_wait_s:
        time.sleep(poll_s)
        now = [_cpu_ns(p) for p in live]
        if any(v is None for v in now):
            break
        used = sum(b - a for a, b in zip(last, now)) / 1e9  # type: ignore[operator]
        last = now
        if used < busy_share * poll_s:
            break
    return time.perf_counter() - t0


# -- targets -------------------------------------------------------------------------------------------


class _Target:
    """A thing to time (reference of a run, or one model file on one backend) and the worker that holds it."""

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
        self.settings: dict[str, Any] = {}
        self.worker: Worker | None = None
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
        return self.status == "ok" and self.worker is not None

    @property
    def pid(self) -> int | None:
        return self.worker.pid if self.worker is not None else None

    def fail(self, status: str, error: str) -> None:
        self.status, self.error = status, error
        self.close()

    def start(self, spec: dict[str, Any], frames: np.ndarray, first_batch: int, log: Log) -> None:
        """Spawn the worker and load the target in it (one target at a time, so load times are its own)."""
        try:
            self.worker = Worker(spec)
            info = self.worker.ask("load", timeout=_LOAD_TIMEOUT_S, frames=frames, first_batch=first_batch)
        except Exception as e:
            self.fail("failed", one_line(e))
            log(f"{self.name} on {self.backend}: failed ({self.error})")
            return
        self.name, self.variant, self.format = info["name"], info["variant"], info["format"]
        self.provider, self.encoder, self.head_sha256 = info["provider"], info["encoder"], info["head_sha256"]
        self.size_mb, self.load_s, self.settings = info["size_mb"], info["load_s"], {**info["settings"], "worker_pid": info["pid"]}
        what = f"reference {self.path} ({self.encoder})" if self.kind == "reference" else f"{self.name} on {self.backend} ({self.provider})"
        log(f"loaded {what} in {self.load_s:.2f} s in worker {self.pid}; settings {format_settings(self.settings)}")

    def close(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.close()


def format_settings(s: dict[str, Any]) -> str:
    """A row's settings as one short line: runtime, threads, OpenMP wait policy, ORT session options."""
    if not s:
        return "-"
    parts = [str(s.get("runtime", "?")), f"threads {s.get('threads', '?')}"]
    if "graph_optimization" in s:
        parts.append(f"graph opt {s['graph_optimization']}, {s.get('execution_mode', '?')}, inter-op {s.get('inter_op_threads', '?')}")
        parts += [f"{k}={v}" for k, v in (s.get("session_config") or {}).items()] or ["session config default"]
    parts.append(f"OpenMP env {s.get('openmp_env', '?')}")
    if "allocator" in s:
        parts.append(f"allocator {s['allocator']}")
    return "; ".join(parts)


def _file_metadata(path: Path) -> Any:
    """The model's metadata without loading it for inference (for rows whose backend could not load it)."""
    from waste_edge.runtime.model_info import read_metadata

    try:
        return read_metadata(path)
    except Exception:
        return None


def _model_targets(path: Path, cfg: BenchConfig, frames: np.ndarray, log: Log) -> list[_Target]:
    """One target per backend for a model file, loaded in its worker (or failed / skipped with the reason)."""
    from waste_edge.runtime.formats import format_for_path
    from waste_edge.runtime.backends.select import available_backends, candidate_backends

    name = path.name
    try:
        fmt = format_for_path(path)
        if not path.is_file():
            raise WasteEdgeError(f"{path}: model file not found")
    except Exception as e:
        t = _Target("model", name, "?", ",".join(cfg.backends or ["auto"]), path, path.suffix.lstrip("."))
        t.fail("failed", one_line(e))
        return [t]
    if cfg.backends is None:
        wanted = available_backends(path)
        if not wanted:
            t = _Target("model", name, "?", "auto", path, fmt.name)
            try:
                candidate_backends(path, "auto")
                t.fail("failed", "no backend available")
            except Exception as e:
                t.fail("failed", one_line(e))
            return [t]
    else:
        wanted = list(cfg.backends)
    here = set(available_backends(path))
    targets = []
    for backend in wanted:
        t = _Target("model", name, "?", backend, path, fmt.name)
        t.size_mb = file_size_mb(path)
        targets.append(t)
        if backend not in fmt.backends:
            t.fail("skipped", f"a {fmt.suffix} file runs on {', '.join(fmt.backends)}, not on {backend}")
            continue
        if backend not in here:  # say why without spawning a worker that can only fail
            try:
                candidate_backends(path, backend)
            except Exception as e:
                t.fail("failed", one_line(e))
                continue
        spec = {"kind": "model", "path": str(path), "backend": backend, "threads": cfg.threads, "session_config": cfg.session_config}
        t.start(spec, frames, cfg.batches[0], log)
    known = next((t for t in targets if t.encoder), None)
    meta = None if known else _file_metadata(path)
    for t in targets:
        if not t.encoder:
            if known is not None:
                t.variant, t.encoder, t.head_sha256 = known.variant, known.encoder, known.head_sha256
            elif meta is not None:
                t.variant, t.encoder, t.head_sha256 = meta.variant, meta.encoder, meta.head_sha256
    return targets


def _reference_target(run_dir: Path, cfg: BenchConfig, frames: np.ndarray, log: Log) -> _Target:
    t = _Target("reference", run_dir.name, "reference", "cpu", run_dir, "pytorch+sklearn")
    t.start({"kind": "reference", "path": str(run_dir), "threads": cfg.threads}, frames, cfg.batches[0], log)
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


def _row_for(t: _Target, batch: int) -> BenchRow:
    return BenchRow(
        model=t.name, variant=t.variant, backend=t.backend, batch=batch, status=t.status, error=t.error,
        load_s=t.load_s, size_mb=t.size_mb, peak_rss_mb=t.peak_rss_mb, gpu_mem_mb=t.gpu_mem_mb, accuracy=t.accuracy,
        format=t.format, provider=t.provider, encoder=t.encoder, path=str(t.path), settings=dict(t.settings),
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


def _measure_batch(targets: list[_Target], batch: int, cfg: BenchConfig, bar: Any, log: Log,
                   checks: dict[int, "_AloneCheck"] | None = None) -> dict[int, list[list[float]]]:
    """Warm up, then interleaved rounds, one worker at a time; per target (by index) the latencies of each round.
    A reference under an alone check shares its turn with its two fresh-process twins (see `_AloneCheck`)."""
    checks = checks or {}
    active = [i for i, t in enumerate(targets) if t.ok]
    pids = [targets[i].pid for i in active] + [pid for c in checks.values() for pid in c.pids]
    per_round = cfg.seconds / cfg.rounds if cfg.seconds is not None else None
    out: dict[int, list[list[float]]] = {i: [] for i in active}

    def drop(i: int, e: BaseException, when: str) -> None:
        t = targets[i]
        t.batch_errors[batch] = one_line(e)
        active.remove(i)
        log(f"{t.name} on {t.backend}, batch {batch}: failed in {when} ({t.batch_errors[batch]})")
        if isinstance(e, WorkerDied):
            t.fail("failed", t.batch_errors[batch])

    def time_round(i: int, r: int) -> None:
        wait_until_idle(pids)
        try:
            out[i].append(targets[i].worker.ask("time", batch=batch, iters=cfg.iters, seconds=per_round))  # type: ignore[union-attr]
        except Exception as e:
            drop(i, e, f"round {r + 1}")

    for i in list(active):
        wait_until_idle(pids)
        try:
            targets[i].worker.ask("warmup", batch=batch, n=cfg.warmup)  # type: ignore[union-attr]
        except Exception as e:
            drop(i, e, "warm-up")
    for r in range(cfg.rounds):
        for i in list(active):
            if i in checks:
                checks[i].turn(r, lambda: time_round(i, r), pids)
            else:
                time_round(i, r)
            if bar is not None:
                bar.update(1)
    return out


class _AloneCheck:
    """A reference's pipeline alone in two fresh processes (`alone.py`), timed in the same rounds as its row.

    Why in the same rounds: the machine drifts by tens of percent over seconds, so a yardstick timed after the
    run measures the minute it ran in. Why two: their mean is a steadier yardstick, and the spread between two
    identical processes, reported beside the deviation, is the noise floor a reader should judge it against
    (it exposed the allocator-history effect that `machine.settle_allocator` now removes: before it, two
    fresh processes differed by up to 15-20 % and the worker ran 24-29 % faster than a fresh process on Lite0).
    The reference and its twins take turns in an order that rotates every round, so none always follows another.
    """

    def __init__(self, target: _Target, cfg: BenchConfig, log: Log) -> None:
        from waste_edge.bench.alone import AloneProcess

        self.target = target
        self.batch = cfg.batches[0]
        self.rounds: list[dict[int, float]] = [{}, {}]
        self.error: str | None = None
        self.twins: list[Any] = []
        spec = {"kind": "reference", "path": str(target.path), "batch": self.batch, "frame": list(cfg.frame), "warmup": cfg.warmup,
                "iters": cfg.iters, "seconds": cfg.seconds / cfg.rounds if cfg.seconds is not None else None, "threads": cfg.threads}
        try:
            for _ in range(2):
                self.twins.append(AloneProcess(spec))
            log(f"reference {target.name} also loaded alone in fresh processes {', '.join(str(p.pid) for p in self.twins)}")
        except Exception as e:
            self.fail(e)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.twins]

    def fail(self, e: BaseException) -> None:
        self.error = self.error or one_line(e)
        self.close()

    def turn(self, r: int, reference_round: Any, pids: Sequence[int | None]) -> None:
        """The reference's round and one round of each twin, in an order rotated by the round number."""
        slots = [reference_round] + [lambda k=k: self._twin_round(k, r, pids) for k in range(len(self.twins))]
        for k in range(len(slots)):
            slots[(k + r) % len(slots)]()

    def _twin_round(self, k: int, r: int, pids: Sequence[int | None]) -> None:
        if self.error is None:
            wait_until_idle(pids)
            try:
                self.rounds[k][r] = self.twins[k].round()
            except Exception as e:
                self.fail(e)

    def close(self) -> None:
        twins, self.twins = self.twins, []
        for p in twins:
            p.close()

    def result(self, rows: list[BenchRow], log: Log) -> dict[str, Any]:
        """The reference row against the mean of its twins, round by round; and the twins against each other."""
        entry: dict[str, Any] = {"reference": self.target.name, "batch": self.batch}
        row = next((r for r in rows if r.model == self.target.name and r.variant == "reference" and r.batch == self.batch), None)
        n = len(row.round_ms) if row is not None and row.status == "ok" and row.round_ms else 0
        if self.error or not n or any(len(t) < n for t in self.rounds):
            entry["error"] = self.error or "the reference row was not measured"
            return entry
        a, b = ([t[r] for r in sorted(t)][:n] for t in self.rounds)
        alone = [(x + y) / 2 for x, y in zip(a, b)]
        entry.update(harness_ms=statistics.median(row.round_ms), alone_ms=statistics.median(alone), alone_round_ms=alone,
                     harness_over_alone=statistics.median(h / m for h, m in zip(row.round_ms, alone)),
                     twin_spread=statistics.median(x / y for x, y in zip(a, b)) - 1)  # type: ignore[union-attr]
        log(f"reference {self.target.name}: {entry['harness_ms']:.2f} ms in the harness, {entry['alone_ms']:.2f} ms alone "
            f"(round by round {(entry['harness_over_alone'] - 1) * 100:+.1f} %; the two alone processes differ by {entry['twin_spread'] * 100:+.1f} %)")
        return entry


def _accuracy_samples(cfg: BenchConfig) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    from waste_edge.data.discovery import discover
    from waste_edge.data.sample import seeded_sample

    ds = discover(cfg.data)
    samples = seeded_sample(ds.split("test") or ds.samples, cfg.data_limit or None)
    if not samples:
        raise BenchError(f"{cfg.data}: no images for the accuracy column")
    return [(str(s.path), s.label) for s in samples], {"data": str(cfg.data), "split": "test" if ds.split("test") else "all"}


def _progress_bar(total: int, enabled: bool) -> Any:
    if not (enabled and total):
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="bench", unit="round", file=sys.stderr, leave=False)


# -- the run ---------------------------------------------------------------------------------------------


def run_bench(cfg: BenchConfig, log: Log | None = None) -> BenchReport:
    """Measure every target; never raises for one row's failure (see the module docstring)."""
    say: Log = log or quiet
    from waste_edge.bench.machine import load_average, machine_info

    machine = machine_info()
    notes: list[str] = []
    w, h = cfg.frame
    frames = synthetic_frames(max(cfg.batches), w, h)

    refs = [_reference_target(Path(r), cfg, frames, say) for r in cfg.references]
    # Twins loaded right after the references they check, before any model: of the same age (see _AloneCheck).
    checks = {i: _AloneCheck(t, cfg, say) for i, t in enumerate(refs) if cfg.check_alone and t.ok}
    models: list[_Target] = []
    for m in cfg.models:
        models.extend(_model_targets(Path(m), cfg, frames, say))
    _match_references(models, [r for r in refs if r.ok], notes)
    targets = refs + models
    rows: list[BenchRow] = []
    camera: list[Any] = []
    profiles: list[dict[str, Any]] = []
    accuracy_info: dict[str, Any] | None = None
    try:
        bar = _progress_bar(sum(1 for t in targets if t.ok) * len(cfg.batches) * cfg.rounds, cfg.progress)
        measured: dict[int, dict[int, list[list[float]]]] = {}
        try:
            for n, batch in enumerate(cfg.batches):
                measured[batch] = _measure_batch(targets, batch, cfg, bar, say, checks if n == 0 else None)
                for c in checks.values():
                    c.close()
        finally:
            for c in checks.values():
                c.close()
            if bar is not None:
                bar.close()

        for t in targets:  # after the largest batch, before the accuracy pass decodes photos
            if t.ok and cfg.memory:
                try:
                    mem = t.worker.ask("memory")  # type: ignore[union-attr]
                    t.peak_rss_mb, t.gpu_mem_mb = mem["peak_rss_mb"], mem["gpu_mem_mb"]
                except Exception as e:
                    notes.append(f"peak RSS of {t.name} on {t.backend} not measured: {one_line(e)}")

        if cfg.data is not None:
            try:
                samples, accuracy_info = _accuracy_samples(cfg)
                accuracy_info["images"] = len(samples)
                for t in targets:
                    if not t.ok:
                        continue
                    try:
                        acc = t.worker.ask("accuracy", samples=samples, progress=cfg.progress and len(samples) > 50)  # type: ignore[union-attr]
                        t.accuracy = acc["accuracy"]
                        accuracy_info["images"], accuracy_info["unreadable"] = acc["images"], acc["unreadable"]
                        say(f"accuracy {t.name} on {t.backend}: {t.accuracy:.4f} ({acc['images']} images)")
                    except Exception as e:
                        notes.append(f"accuracy of {t.name} on {t.backend} not measured: {one_line(e)}")
            except Exception as e:
                notes.append(f"accuracy not measured: {one_line(e)}")

        for batch in cfg.batches:
            by_target: dict[int, BenchRow] = {}
            for i, t in enumerate(targets):
                row = _row_for(t, batch)
                if batch in t.batch_errors:
                    row.status, row.error = "failed", t.batch_errors[batch]
                elif measured[batch].get(i):
                    _fill_stats(row, measured[batch][i], batch)
                by_target[id(t)] = row
                rows.append(row)
            for t in targets:
                row = by_target[id(t)]
                ref = t if t.kind == "reference" else t.reference
                ref_row = by_target.get(id(ref)) if ref is not None else None
                if row.status != "ok" or ref_row is None or ref_row.status != "ok" or not row.round_ms or not ref_row.round_ms:
                    continue
                pairs = [a / b for a, b in zip(ref_row.round_ms, row.round_ms) if b > 0]
                if pairs:
                    row.round_speedups = [round(p, 4) for p in pairs]
                    row.speedup_vs_reference = float(statistics.median(pairs))

        if cfg.profile:
            for t in models:
                if not (t.ok and t.format == "onnx" and t.backend == "cpu"):
                    continue
                try:
                    for prof in t.worker.ask("profile", batches=cfg.batches):  # type: ignore[union-attr]
                        profiles.append({"model": t.name, "variant": t.variant, "backend": t.backend, **prof})
                except Exception as e:
                    notes.append(f"profile of {t.name} failed: {one_line(e)}")

        if cfg.camera:
            cam_frames = synthetic_frames(cfg.camera_frames, w, h, seed=1)
            seen: set[Path] = set()
            for t in models:
                if not t.ok or t.path in seen:
                    continue
                seen.add(t.path)
                say(f"camera loop {t.name} on {t.backend}")
                try:
                    camera.append(t.worker.ask("camera", frames=cam_frames, rounds=cfg.rounds))  # type: ignore[union-attr]
                except Exception as e:
                    camera.append({"model": t.name, "variant": t.variant, "backend": t.backend, "status": "failed", "error": one_line(e)})
    finally:
        for t in targets:
            t.close()

    reference_check = [c.result(rows, say) for c in checks.values()]
    machine["load_average_end"] = load_average()
    settings = {
        "frame": f"{w}x{h}", "frame_channel_order": "BGR (fused models), RGB (reference)", "batches": cfg.batches,
        "backends": cfg.backends or "available", "warmup": cfg.warmup, "iters": cfg.iters if cfg.seconds is None else None,
        "seconds": cfg.seconds, "rounds": cfg.rounds, "threads": cfg.threads or "each runtime's default",
        "session_config": cfg.session_config, "models": [str(m) for m in cfg.models], "references": [str(r) for r in cfg.references],
        "isolation": "one worker process per target, spawned once; rounds interleaved one worker at a time",
        "speedup": "median over rounds of reference round mean / row round mean, same batch (rounds interleaved)",
        "throughput": "batch / median round mean latency",
        "peak_rss": "each target's own worker process" if cfg.memory else "not measured",
    }
    if accuracy_info:
        settings["accuracy"] = accuracy_info
    return BenchReport(machine=machine, settings=settings, rows=rows, camera=camera, profiles=profiles,
                       reference_check=reference_check, notes=notes)
