"""What the benchmark times: a `Target` is the reference pipeline of a run, or one model file on one backend,
held by a worker process of its own (`processes.Worker`). Which backends a model gets rows for, and why a
row is skipped or failed before any worker starts, is `runtime.backends.select.check_backends`'s answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from waste_edge._io import Log
from waste_edge.bench.config import BenchConfig
from waste_edge.bench.processes import LOAD_TIMEOUT_S, Worker
from waste_edge.bench.worker import file_size_mb, one_line
from waste_edge.errors import WasteEdgeError


class Target:
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
        self.reference: "Target | None" = None
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
            info = self.worker.ask("load", timeout=LOAD_TIMEOUT_S, frames=frames, first_batch=first_batch)
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


def model_targets(path: Path, cfg: BenchConfig, frames: np.ndarray, log: Log) -> list[Target]:
    """One target per backend for a model file, loaded in its worker, or failed / skipped with the reason
    `runtime.backends.select.check_backends` gives (no worker is spawned for a backend that can only fail)."""
    from waste_edge.runtime.backends.select import check_backends

    name = path.name
    try:
        if not path.is_file():
            raise WasteEdgeError(f"{path}: model file not found")
        checks = check_backends(path, cfg.backends)
    except Exception as e:
        t = Target("model", name, "?", ",".join(cfg.backends or ["auto"]), path, path.suffix.lstrip("."))
        t.fail("failed", one_line(e))
        return [t]
    fmt = path.suffix.lstrip(".")
    targets = []
    for check in checks:
        t = Target("model", name, "?", check.backend, path, fmt)
        t.size_mb = file_size_mb(path)
        targets.append(t)
        if check.status != "ok":
            t.fail(check.status, check.reason)
            continue
        spec = {"kind": "model", "path": str(path), "backend": check.backend, "threads": cfg.threads, "session_config": cfg.session_config}
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


def reference_target(run_dir: Path, cfg: BenchConfig, frames: np.ndarray, log: Log) -> Target:
    t = Target("reference", run_dir.name, "reference", "cpu", run_dir, "pytorch+sklearn")
    t.start({"kind": "reference", "path": str(run_dir), "threads": cfg.torch_threads}, frames, cfg.batches[0], log)
    return t


def match_references(models: list[Target], refs: list[Target], notes: list[str]) -> None:
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
