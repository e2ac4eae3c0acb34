"""The benchmark's outputs: JSON (every number), a Markdown table like Ultralytics' benchmark, a PNG plot.

The Markdown puts the machine and the settings above the table because a latency without them is not a
result; reasons for failed or skipped rows go in numbered notes under the table so the table stays narrow.
The plot shows the latency of one call and the throughput against batch size, one line per model / variant /
backend, the reference dashed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from waste_edge._io import atomic_write_text, write_json
from waste_edge.bench.targets import format_settings

Report = Mapping[str, Any]  # BenchReport.to_dict()


def _f(x: Any, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def _size(mb: Any) -> str:
    return "-" if mb is None else f"{mb:.1f}" if mb >= 1 else f"{mb:.3f}"


def machine_summary(machine: Mapping[str, Any]) -> list[str]:
    v = machine.get("versions", {})
    cores = f"{machine.get('usable_cores')} usable cores ({machine.get('logical_cores')} logical, {machine.get('physical_cores', '?')} physical)"
    flags = ", ".join(machine.get("cpu_flags") or []) or "none listed"
    gpus = "; ".join(machine.get("gpus") or []) or "none"
    libs = ", ".join(f"{k} {v[k]}" for k in ("onnxruntime", "onnxruntime-gpu", "torch", "numpy", "opencv-python-headless", "tensorrt") if k in v)
    return [
        f"- CPU: {machine.get('cpu')}, {cores}, {machine.get('memory_gb', '?')} GB RAM; ISA: {flags}",
        f"- GPU: {gpus}; ONNX Runtime providers: {', '.join(machine.get('onnxruntime_providers', []))}",
        f"- {machine.get('platform')}, Python {v.get('python')}, {libs}",
        f"- load average (1/5/15 min) at start {machine.get('load_average_start')}, at end {machine.get('load_average_end')}"
        f"; OpenMP environment: {machine.get('openmp_env', '?')}",
    ]


def to_markdown(report: Report, title: str = "waste-edge benchmark") -> str:
    rows = report["rows"]
    s = report.get("settings", {})
    lines = [f"## {title}", ""]
    lines += machine_summary(report.get("machine", {}))
    iters = f"{s.get('iters')} calls" if s.get("iters") else f"{s.get('seconds')} s"
    lines += [
        f"- input: {s.get('frame')} uint8 frame(s) -> probabilities (preprocessing included); batches {s.get('batches')}; "
        f"{s.get('warmup')} warm-up calls, then {s.get('rounds')} interleaved rounds of {iters} per target; threads {s.get('threads')}"
        + (f"; ONNX Runtime session config {s['session_config']}" if s.get("session_config") else ""),
        "- every target runs in its own worker process at its own defaults; the settings column [s1], [s2], ... "
        "is listed under the table",
        "",
    ]
    with_acc = any(r.get("accuracy") is not None for r in rows)
    with_gpu = any(r.get("gpu_mem_mb") is not None for r in rows)
    head = ["Model", "Variant", "Backend", "Batch", "Status", "Size (MB)", "Load (s)", "p50 (ms)", "p90 (ms)", "p99 (ms)",
            "mean ± std (ms)", "ms/img", "img/s", "Peak RSS (MB)"]
    head += ["GPU mem (MB)"] if with_gpu else []
    head += ["Speed-up vs ref"]
    head += ["Accuracy"] if with_acc else []
    head += ["Settings"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    reasons: list[str] = []
    settings: list[str] = []
    for r in rows:
        status = r["status"]
        if r.get("error"):
            if r["error"] not in reasons:
                reasons.append(r["error"])
            status = f"{status} [{reasons.index(r['error']) + 1}]"
        sp = r.get("speedup_vs_reference")
        cells = [r["model"], r["variant"], r["backend"], str(r["batch"]), status, _size(r.get("size_mb")), _f(r.get("load_s")),
                 _f(r.get("p50_ms")), _f(r.get("p90_ms")), _f(r.get("p99_ms")),
                 f"{_f(r.get('mean_ms'))} ± {_f(r.get('std_ms'))}" if r.get("mean_ms") is not None else "-",
                 _f(r.get("ms_per_image")), _f(r.get("throughput"), 1), _f(r.get("peak_rss_mb"), 0)]
        cells += [_f(r.get("gpu_mem_mb"), 0)] if with_gpu else []
        cells += [f"{sp:.2f}x" if sp is not None else "-"]
        cells += [_f(r.get("accuracy"), 4)] if with_acc else []
        setting = format_settings(r.get("settings") or {})
        if setting != "-" and setting not in settings:
            settings.append(setting)
        cells += [f"[s{settings.index(setting) + 1}]" if setting != "-" else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    if reasons:
        lines += [""] + [f"[{i + 1}] {why}" for i, why in enumerate(reasons)]
    if settings:
        lines += [""] + [f"[s{i + 1}] {text}" for i, text in enumerate(settings)]
    checks = report.get("reference_check") or []
    if checks:
        lines += ["", "Reference pipeline alone in two fresh processes, timed in the same rounds as its row above (median of round means; "
                  "deviation = median over rounds of row / mean of the two; noise floor = the two against each other):", ""]
        for c in checks:
            if c.get("error"):
                lines.append(f"- {c['reference']}, batch {c['batch']}: not measured ({c['error']})")
            else:
                lines.append(f"- {c['reference']}, batch {c['batch']}: {c['alone_ms']:.2f} ms alone, {c['harness_ms']:.2f} ms in the harness "
                             f"({(c['harness_over_alone'] - 1) * 100:+.1f} %; noise floor {c['twin_spread'] * 100:+.1f} %)")
    if s.get("accuracy"):
        a = s["accuracy"]
        lines += ["", f"Accuracy: {a['images']} images of {a['data']} ({a['split']} split), batch 1."]
    cams = report.get("camera") or []
    if cams:
        lines += ["", "### Camera loop (headless, video file) vs pure inference", "",
                  "| Model | Variant | Backend | Status | Frames | Loop FPS | Pure FPS | Overhead | Loop without decoding FPS | Decoding alone FPS | loop p50 / p99 (ms) | Video |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in cams:
            lat = c.get("loop_latency_ms") or {}
            status = c["status"] + (f": {c['error']}" if c.get("error") else "")
            ov = c.get("overhead")
            lines.append(
                f"| {c['model']} | {c['variant']} | {c['backend']} | {status} | {c.get('frames')} x {c.get('rounds')} | "
                f"{_f(c.get('loop_fps'), 1)} | {_f(c.get('pure_fps'), 1)} | {f'{ov * 100:+.1f} %' if ov is not None else '-'} | "
                f"{_f(c.get('memory_loop_fps'), 1)} | {_f(c.get('decode_fps'), 1)} | "
                f"{_f(lat.get('p50'))} / {_f(lat.get('p99'))} | {c.get('frame_size')} {c.get('codec')} |"
            )
        lines += ["", "Overhead = median over rounds of (pure FPS / loop FPS - 1); loop and pure inference alternate. Loop without decoding: the "
                  "same loop over already-decoded frames (its own bookkeeping); decoding alone: OpenCV decoding the video, nothing else."]
    for prof in report.get("profiles") or []:
        lines += ["", f"### ONNX Runtime profile: {prof['model']} ({prof['variant']}, {prof['backend']}, batch {prof['batch']})", "",
                  "| Op | ms per run | share |", "|---|---|---|"]
        lines += [f"| {o['op']} | {o['ms_per_run']:.3f} | {o['share'] * 100:.1f} % |" for o in prof["ops"]]
        if prof.get("stages"):
            lines += ["", "Stages: " + ", ".join(f"{st['stage']} {st['ms_per_run']:.2f} ms ({st['share'] * 100:.1f} %)" for st in prof["stages"])]
    notes = report.get("notes") or []
    if notes:
        lines += [""] + [f"- note: {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_outputs(report: Report, title: str, *, json: str | Path | None = None, md: str | Path | None = None,
                  plot: str | Path | None = None) -> list[Path]:
    """The report as JSON (every number), Markdown and a PNG plot, each where asked; the paths written."""
    out = []
    if json is not None:
        out.append(write_json(json, dict(report), allow_nan=False, default=str))
    if md is not None:
        out.append(atomic_write_text(md, to_markdown(report, title)))
    if plot is not None:
        out.append(write_plot(plot, report, title))
    return out


def write_plot(path: str | Path, report: Report, title: str = "waste-edge benchmark") -> Path:
    """Latency of one call and throughput vs batch size, one line per model / variant / backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple[str, str, str], list[tuple[int, float, float]]] = {}
    for r in report["rows"]:
        if r["status"] == "ok" and r.get("ms_per_image") is not None:
            series.setdefault((r["model"], r["variant"], r["backend"]), []).append((r["batch"], r["ms_per_image"] * r["batch"], r["throughput"]))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    batches = sorted({b for pts in series.values() for b, _, _ in pts})
    for (model, variant, backend), pts in series.items():
        pts.sort()
        xs = [p[0] for p in pts]
        ref = variant == "reference"
        label = f"{model} (study reference)" if ref else f"{model} [{variant}, {backend}]"
        style = {"linestyle": "--", "color": "black"} if ref else {}
        ax1.plot(xs, [p[1] for p in pts], marker="o", label=label, **style)
        ax2.plot(xs, [p[2] for p in pts], marker="o", label=label, **style)
    for ax, ylabel in ((ax1, "latency of one call on a batch (ms, median round)"), (ax2, "throughput (images/s)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        if batches:
            ax.set_xticks(batches)
            ax.set_xticklabels([str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    if series:
        ax2.legend(fontsize=7, loc="best")
    else:
        ax1.text(0.5, 0.5, "no successful rows", ha="center", va="center", transform=ax1.transAxes)
    s = report.get("settings", {})
    fig.suptitle(f"{title}: {s.get('frame')} frame -> probabilities, {s.get('threads')} threads")
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
