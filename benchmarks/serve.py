"""Benchmark of `waste-edge serve`, one command:

    .venv/bin/python benchmarks/serve.py                  # ~4 min on a 2-core CPU
    .venv/bin/python benchmarks/serve.py --quick          # a smoke run (~1 min)

1. classify: a real `serve` process (no cameras, default model) and 50 concurrent HTTP clients sending 20
   `POST /api/v1/classify` each (a real photo from ../shared/data/waste-sample, else a generated 640x480
   JPEG): requests/s, p50 / p99 latency, errors (any answer but 200, or a failed connection).
2. cameras: `serve` on 2 and 4 copies of a generated 640x480 video (--loop, read as fast as the model
   goes), with --batching off (each camera thread calls the model), on (one call per batch of frames) and
   auto (measures both on the first batch and keeps the faster); the modes are interleaved (A B C A B C)
   so a busy machine disturbs them alike. Per run: frames/s of each camera over a window after warm-up,
   read from /api/v1/status.

3. one camera: `serve` with one camera against `waste-edge camera` on the same unthrottled 640x480 video and
   the default model (both run the same frame loop, `runtime/pipeline.py`; the service adds its batcher hand-over,
   HTTP server, MJPEG / SSE / metrics sinks and status). Interleaved in pairs whose order alternates
   (camera, serve, serve, camera, ...); frames/s of each run from its own JSONL events (capture timestamps of
   the frames after a warm-up), the ratio per pair, the median over pairs; beside it the process's own CPU
   time per frame over the same frames (sampled every 20 ms from /proc), which a busy host disturbs far less.

Writes benchmarks/results/serve-cpu.json and .md (with /proc/loadavg before and after each part) and
prints the Markdown. Everything talks to the service over loopback, as a client would.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
WASTE_SAMPLE = REPO.parent / "shared" / "data" / "waste-sample"
RESULTS = HERE / "results"


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "n/a"


class Serve:
    """`waste-edge serve --port 0 ARGS` in a subprocess; the URL from its 'serving on' line."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "waste_edge.cli", "serve", "--port", "0", *args], cwd=REPO,
                                     env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True).start()
        for line in self.proc.stdout:
            if line.startswith("serving on "):
                self.url = line.split()[2]
                break
        else:
            raise SystemExit("serve did not start:\n" + "".join(self.err))
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(60)


def photo_bytes() -> tuple[bytes, str]:
    photos = sorted((WASTE_SAMPLE / "TEST" / "B").glob("*.jpg")) if WASTE_SAMPLE.is_dir() else []
    big = [p for p in photos if p.stat().st_size > 30_000]
    if big or photos:
        p = (big or photos)[0]
        return p.read_bytes(), str(p.relative_to(WASTE_SAMPLE.parent))
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(buf, "JPEG", quality=85)
    return buf.getvalue(), "generated 640x480 JPEG"


async def _clients(url: str, body: bytes, clients: int, requests: int) -> tuple[list[float], int, float]:
    import httpx

    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def one_client() -> None:
            nonlocal errors
            for _ in range(requests):
                t0 = time.perf_counter()
                try:
                    r = await client.post("/api/v1/classify", content=body, headers={"Content-Type": "image/jpeg"})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - t0) * 1e3)
                errors += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return latencies, errors, wall


def bench_classify(clients: int, requests: int) -> dict:
    body, what = photo_bytes()
    serve = Serve([])
    try:
        import httpx

        httpx.post(serve.url + "/api/v1/classify", content=body, headers={"Content-Type": "image/jpeg"}, timeout=60).raise_for_status()  # warm-up
        before = loadavg()
        lat, errors, wall = asyncio.run(_clients(serve.url, body, clients, requests))
        after = loadavg()
    finally:
        code = serve.stop()
    n = len(lat)
    q = statistics.quantiles(lat, n=100)
    return {"photo": what, "photo_bytes": len(body), "clients": clients, "requests_per_client": requests, "requests": n,
            "errors": errors, "wall_s": round(wall, 2), "requests_per_s": round(n / wall, 2), "p50_ms": round(statistics.median(lat), 1),
            "p99_ms": round(q[98], 1), "max_ms": round(max(lat), 1), "serve_exit": code, "loadavg_before": before, "loadavg_after": after}


def process_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of process `pid` itself, and of its children it has reaped (e.g. hook commands)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def status_window(args: list[str], warmup: float, seconds: float) -> dict:
    """`serve ARGS`: once every camera has classified a frame and `warmup` s passed, /api/v1/status at the start
    (s0, t0) and the end (s1, t1) of a `seconds` window, the serve process's CPU seconds in the window (its own,
    `cpu_s`, and its reaped children's, `children_cpu_s`), then SIGTERM and its exit status (`exit`)."""
    import httpx

    serve = Serve(args)
    try:
        get = lambda: httpx.get(serve.url + "/api/v1/status", timeout=60).json()  # noqa: E731
        deadline = time.monotonic() + 120
        while not all(c["counters"]["frames"] > 0 for c in get()["cameras"]):
            if time.monotonic() > deadline:
                raise SystemExit("cameras did not start")
            time.sleep(0.5)
        time.sleep(warmup)
        cpu0, s0, t0 = process_cpu_s(serve.proc.pid), get(), time.monotonic()
        time.sleep(seconds)
        s1, t1, cpu1 = get(), time.monotonic(), process_cpu_s(serve.proc.pid)
    finally:
        code = serve.stop()
    return {"s0": s0, "t0": t0, "s1": s1, "t1": t1, "exit": code, "cpu_s": cpu1[0] - cpu0[0], "children_cpu_s": cpu1[1] - cpu0[1]}


def camera_run(video: Path, cameras: int, mode: str, warmup: float, seconds: float) -> dict:
    args = [a for i in range(cameras) for a in ("--device", f"cam{i}={video}")]
    w = status_window([*args, "--loop", "--batching", mode], warmup, seconds)
    s0, t0, s1, t1 = w["s0"], w["t0"], w["s1"], w["t1"]
    per_cam = [(b["counters"]["frames"] - a["counters"]["frames"]) / (t1 - t0) for a, b in zip(s0["cameras"], s1["cameras"])]
    b = s1["batching"]
    return {"cameras": cameras, "mode": mode, "fps_per_camera": [round(x, 2) for x in per_cam], "mean_fps_per_camera": round(statistics.mean(per_cam), 2),
            "total_fps": round(sum(per_cam), 2), "mean_batch": b["mean_batch"], "calibration": b["calibration"], "batched": b["batched"],
            "infer_p50_ms": round(statistics.mean(c["latency_ms"]["infer"]["p50"] for c in s1["cameras"]), 2), "loadavg": loadavg()}


def bench_cameras(counts: list[int], modes: list[str], reps: int, warmup: float, seconds: float) -> list[dict]:
    from waste_edge.runtime.demo import write_demo_video

    video = write_demo_video(Path(tempfile.mkdtemp(prefix="waste-edge-bench-")) / "cam.mp4", seconds=4, fps=30, size=(640, 480))
    runs = []
    for n in counts:
        for rep in range(reps):
            for mode in modes:
                r = camera_run(video, n, mode, warmup, seconds)
                r["rep"] = rep
                print(f"  {n} cameras, --batching {mode}: {r['mean_fps_per_camera']} frames/s per camera (mean batch {r['mean_batch']}), loadavg {r['loadavg']}", flush=True)
                runs.append(r)
    return runs


def _events_fps(path: Path, warmup: int) -> tuple[float, int]:
    """Frames/s of a JSONL event file: classified frames after the first `warmup`, over their capture times."""
    ts = [e["ts"] for e in map(json.loads, path.read_text().splitlines()) if "label" in e and "ts" in e][warmup:]
    return ((len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else 0.0), len(ts)


class CpuWindow(threading.Thread):
    """Samples a process's own CPU seconds and the classified frames of its JSONL every 20 ms: CPU per frame between
    the `warmup`-th frame and the last sample, which the other jobs of a shared host disturb far less than frames/s."""

    def __init__(self, pid: int, events: Path, warmup: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.events, self.warmup = pid, events, warmup
        self.first: tuple[float, int] | None = None
        self.last: tuple[float, int] | None = None
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        frames, buf = 0, b""
        while not self.done.wait(0.02):
            try:
                cpu = process_cpu_s(self.pid)[0]
                if self.events.exists():
                    with self.events.open("rb") as f:
                        f.seek(len(buf))
                        buf += f.read()
                frames = buf.count(b'"label"')
            except (OSError, ValueError, IndexError):
                return  # the process has gone
            if frames >= self.warmup and self.first is None:
                self.first = (cpu, frames)
            if self.first is not None:
                self.last = (cpu, frames)

    def ms_per_frame(self) -> float | None:
        self.done.set()
        self.join()
        if self.first is None or self.last is None or self.last[1] <= self.first[1]:
            return None
        return (self.last[0] - self.first[0]) * 1e3 / (self.last[1] - self.first[1])


def one_camera_run(kind: str, video: Path, work: Path, warmup: int) -> dict:
    events = work / f"{kind}-{time.monotonic_ns()}.jsonl"
    load = loadavg()
    t0 = time.monotonic()
    if kind == "camera":
        proc = subprocess.Popen([sys.executable, "-m", "waste_edge.cli", "camera", "--device", str(video), "--no-show", "--jsonl", str(events)],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        window = CpuWindow(proc.pid, events, warmup)
        while proc.poll() is None and not window.done.is_set():  # sample until the run ends (read its numbers before reaping it)
            time.sleep(0.05)
        cpu_ms = window.ms_per_frame()
        if proc.wait() != 0:
            raise SystemExit(f"camera exited with {proc.returncode}")
    else:
        serve = Serve(["--device", f"cam0={video}", "--jsonl", str(events)])
        window = CpuWindow(serve.proc.pid, events, warmup)
        try:  # no client polls while it runs (a poll costs the service CPU): its log says when the video has ended
            deadline = time.monotonic() + 600
            while not any("camera cam0:" in line and line.rstrip().endswith("ended") for line in serve.err):
                if time.monotonic() > deadline or serve.proc.poll() is not None:
                    raise SystemExit("serve's camera did not reach the end of the video:\n" + "".join(serve.err))
                time.sleep(0.2)
            cpu_ms = window.ms_per_frame()
        finally:
            serve.stop()
    fps, frames = _events_fps(events, warmup)
    return {"kind": kind, "fps": round(fps, 2), "cpu_ms_per_frame": round(cpu_ms, 2) if cpu_ms else None, "frames_timed": frames,
            "wall_s": round(time.monotonic() - t0, 1), "loadavg": load}


def bench_one_camera(pairs: int, seconds: float, warmup: int) -> dict:
    from waste_edge.runtime.demo import write_demo_video

    work = Path(tempfile.mkdtemp(prefix="waste-edge-bench-one-"))
    video = write_demo_video(work / "cam.mp4", seconds=seconds, fps=30, size=(640, 480))
    runs, ratios, cpu_ratios = [], [], []
    for i in range(pairs):
        order = ("camera", "serve") if i % 2 == 0 else ("serve", "camera")
        pair = {k: one_camera_run(k, video, work, warmup) for k in order}
        ratios.append(pair["serve"]["fps"] / pair["camera"]["fps"] if pair["camera"]["fps"] else 0.0)
        cam_cpu, srv_cpu = pair["camera"]["cpu_ms_per_frame"], pair["serve"]["cpu_ms_per_frame"]
        if cam_cpu and srv_cpu:
            cpu_ratios.append(srv_cpu / cam_cpu)
        runs += [pair[k] for k in order]
        print(f"  pair {i + 1}: camera {pair['camera']['fps']} frames/s ({cam_cpu} CPU ms/frame), serve {pair['serve']['fps']} frames/s "
              f"({srv_cpu} CPU ms/frame); serve / camera {ratios[-1]:.3f}, loadavg {pair[order[0]]['loadavg']}", flush=True)
    med = lambda kind, key: statistics.median(r[key] for r in runs if r["kind"] == kind and r[key])  # noqa: E731
    return {"video": f"640x480, {int(seconds * 30)} frames (generated demo video), unthrottled", "warmup_frames": warmup, "pairs": pairs,
            "camera_fps": round(med("camera", "fps"), 2), "serve_fps": round(med("serve", "fps"), 2),
            "ratio_median": round(statistics.median(ratios), 3), "ratios": [round(r, 3) for r in ratios],
            "camera_cpu_ms": round(med("camera", "cpu_ms_per_frame"), 2), "serve_cpu_ms": round(med("serve", "cpu_ms_per_frame"), 2),
            "cpu_ratio_median": round(statistics.median(cpu_ratios), 3) if cpu_ratios else None, "runs": runs}


def markdown(doc: dict) -> str:
    lines = ["# `waste-edge serve` on this CPU", "",
             f"Machine: {doc['machine'].get('cpu')}, {doc['machine'].get('usable_cores')} cores; last command `{doc['command']}` "
             "(each part's own command is in the JSON).", ""]
    c = doc.get("classify")
    if c:
        lines += [
            f"## classify: {c['clients']} concurrent clients x {c['requests_per_client']} requests ({c['photo']}, {c['photo_bytes']} bytes)", "",
            "| requests | errors | requests/s | p50 ms | p99 ms | max ms | loadavg before | loadavg after |",
            "|---:|---:|---:|---:|---:|---:|---|---|",
            f"| {c['requests']} | {c['errors']} | {c['requests_per_s']} | {c['p50_ms']} | {c['p99_ms']} | {c['max_ms']} | {c['loadavg_before']} | {c['loadavg_after']} |",
            ""]
    if doc.get("cameras"):
        lines += ["## cameras: 640x480 video, default model, frames/s per camera (median of the interleaved repeats)", "",
                  "| cameras | --batching | frames/s per camera | total frames/s | mean batch | infer p50 ms | auto chose |",
                  "|---:|---|---:|---:|---:|---:|---|"]
        groups: dict[tuple[int, str], list[dict]] = {}
        for r in doc["cameras"]:
            groups.setdefault((r["cameras"], r["mode"]), []).append(r)
        for (n, mode), rs in groups.items():
            chose = ", ".join(sorted({(r["calibration"] or {}).get("chosen", "-") for r in rs})) if mode == "auto" else ""
            lines.append(f"| {n} | {mode} | {statistics.median(r['mean_fps_per_camera'] for r in rs):.2f} | {statistics.median(r['total_fps'] for r in rs):.2f} | "
                         f"{statistics.median(r['mean_batch'] for r in rs):.2f} | {statistics.median(r['infer_p50_ms'] for r in rs):.1f} | {chose} |")
        lines += ["", "Load average per run: " + "; ".join(f"{r['cameras']}x{r['mode']}#{r['rep']}: {r['loadavg']}" for r in doc["cameras"]), ""]
    one = doc.get("one_camera")
    if one:
        lines += [f"## one camera: `serve` vs `camera`, {one['video']}, default model (`{one['command']}`)", "",
                  "| pairs | camera frames/s | serve frames/s | serve / camera (median of pairs) | per pair | CPU ms/frame camera | "
                  "CPU ms/frame serve | serve / camera CPU per frame (median of pairs) |", "|---:|---:|---:|---:|---|---:|---:|---:|",
                  f"| {one['pairs']} | {one['camera_fps']} | {one['serve_fps']} | {one['ratio_median']} | {', '.join(map(str, one['ratios']))} | "
                  f"{one.get('camera_cpu_ms', '')} | {one.get('serve_cpu_ms', '')} | {one.get('cpu_ratio_median', '')} |",
                  "", "Load average per run: " + "; ".join(f"{r['kind']}: {r['loadavg']}" for r in one["runs"]), ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=20, help="requests per client")
    ap.add_argument("--cameras", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--modes", nargs="+", default=["off", "on", "auto"])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--warmup", type=float, default=4.0)
    ap.add_argument("--seconds", type=float, default=10.0, help="measuring window per camera run")
    ap.add_argument("--quick", action="store_true", help="10 clients x 5 requests, 1 repeat, 5 s windows")
    ap.add_argument("--parts", nargs="+", choices=["classify", "cameras", "one-camera"], default=["classify", "cameras", "one-camera"],
                    help="which parts to run (default: all)")
    ap.add_argument("--pairs", type=int, default=4, help="one camera: interleaved camera / serve pairs")
    ap.add_argument("--video-seconds", type=float, default=10.0, help="one camera: length of the 30 frames/s video")
    ap.add_argument("--out", type=Path, default=RESULTS / "serve-cpu")
    args = ap.parse_args()
    if args.quick:
        args.clients, args.requests, args.reps, args.seconds, args.warmup = 10, 5, 1, 5.0, 2.0
    from waste_edge.bench.machine import machine_info

    command = ("python benchmarks/serve.py" + (" --quick" if args.quick else "") + ("" if len(args.parts) == 3 else " --parts " + " ".join(args.parts))
               + (f" --pairs {args.pairs}" if args.pairs != 4 else "") + (f" --video-seconds {args.video_seconds:g}" if args.video_seconds != 10.0 else ""))
    previous = Path(str(args.out) + ".json")
    # A run of some parts keeps the recorded results of the others (each part says which command measured it).
    doc = json.loads(previous.read_text()) if len(args.parts) < 3 and previous.is_file() else {}
    doc.update({"command": command, "machine": machine_info(), "loadavg_start": loadavg()})
    if "classify" in args.parts:
        print(f"classify: {args.clients} clients x {args.requests} requests (loadavg {loadavg()})", flush=True)
        doc["classify"] = {**bench_classify(args.clients, args.requests), "command": command}
        print(f"  {json.dumps(doc['classify'])}", flush=True)
    if "cameras" in args.parts:
        print(f"cameras: {args.cameras} x modes {args.modes}, {args.reps} repeats", flush=True)
        doc["cameras"] = bench_cameras(args.cameras, args.modes, args.reps, args.warmup, args.seconds)
    if "one-camera" in args.parts:
        print(f"one camera: serve vs camera, {args.pairs} interleaved pairs (loadavg {loadavg()})", flush=True)
        doc["one_camera"] = {**bench_one_camera(args.pairs, args.video_seconds, warmup=30), "command": command}
    doc["loadavg_end"] = loadavg()
    write_results(args.out, doc, markdown(doc))
    return 0


def write_results(out: Path, doc: dict, md: str) -> None:
    """OUT.json (the runs) and OUT.md (the table), and the table on stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(str(out) + ".json").write_text(json.dumps(doc, indent=1) + "\n")
    Path(str(out) + ".md").write_text(md)
    print(md)


if __name__ == "__main__":
    sys.exit(main())
