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
  (`alone_check.AloneCheck` says why it is done this way).
* Load time = constructing the target plus its first inference, one worker at a time. Peak RSS is each
  worker's own high-water mark after the timed rounds (largest batch), taken before the accuracy pass:
  a process that holds only that target, which is the figure an edge user needs.
* Every row is measured inside its own try/except: a backend that is missing here (CUDA, TensorRT), a file
  that does not load, a run that fails or a worker that dies becomes a row with status `failed` (or
  `skipped` where the format cannot use that backend at all) and the reason, and the other rows go on.

Where the parts live: `config.py` (what to measure), `processes.py` (the worker processes), `idle.py` (waiting
for idle cores between turns), `targets.py` (what a row times, and which backends get rows), `alone_check.py`
(`--check-alone`), `results.py` (rows and the report); this module runs the rounds and fills the rows.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from waste_edge._io import Log, quiet
from waste_edge.bench.alone_check import AloneCheck
from waste_edge.bench.config import BenchConfig, BenchError, parse_session_entry
from waste_edge.bench.frames import synthetic_frames
from waste_edge.bench.idle import wait_until_idle
from waste_edge.bench.processes import WorkerDied
from waste_edge.bench.results import BenchReport, BenchRow
from waste_edge.bench.targets import Target, format_settings, match_references, model_targets, reference_target
from waste_edge.bench.worker import one_line

__all__ = ["BenchConfig", "BenchError", "BenchReport", "BenchRow", "format_settings", "parse_session_entry", "run_bench"]


# -- measurement -----------------------------------------------------------------------------------------


def _row_for(t: Target, batch: int) -> BenchRow:
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


def _measure_batch(targets: list[Target], batch: int, cfg: BenchConfig, bar: Any, log: Log,
                   checks: dict[int, AloneCheck] | None = None) -> dict[int, list[list[float]]]:
    """Warm up, then interleaved rounds, one worker at a time; per target (by index) the latencies of each round.
    A reference under an alone check shares its turn with its two fresh-process twins (see `AloneCheck`)."""
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

    refs = [reference_target(Path(r), cfg, frames, say) for r in cfg.references]
    # Twins loaded right after the references they check, before any model: of the same age (see AloneCheck).
    checks = {i: AloneCheck(t, cfg, say) for i, t in enumerate(refs) if cfg.check_alone and t.ok}
    models: list[Target] = []
    for m in cfg.models:
        models.extend(model_targets(Path(m), cfg, frames, say))
    match_references(models, [r for r in refs if r.ok], notes)
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
        "seconds": cfg.seconds, "rounds": cfg.rounds, "threads": cfg.threads or "ONNX Runtime's default", "torch_threads": cfg.torch_threads or "PyTorch's default",
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
