"""Soak test of `waste-edge serve` (issue 25): does it stay flat for hours under clients that come and go?

    .venv/bin/python benchmarks/serve_soak.py                    # 30 minutes (not part of `make test`)
    .venv/bin/python benchmarks/serve_soak.py --minutes 3        # a short look
    .venv/bin/python benchmarks/serve_soak.py --env MALLOC_ARENA_MAX=8 --tag arena8   # the same with an allocator setting

One real `serve` process (default model, 2 cameras looping a generated 640x480 video at its own 15 frames/s, as
cameras deliver) and, over loopback, from this process:
- 10 classify clients, each posting a 640x480 JPEG once a second (about 10 requests/s in all);
- 50 SSE clients, each reading /api/v1/events for 2-12 s, then hanging up and connecting again;
- 2 MJPEG viewers doing the same on /stream/cam0.mjpg;
- a probe of /healthz and /api/v1/status every `--sample` seconds, and the service process's RSS (and its
  anonymous part), open file descriptors and threads read from /proc.

An error is any classify answer but 200, any SSE / MJPEG connection that does not start with 200, any failed
connection, and any /healthz that is not 200. Writes results/serve-soak-cpu[-TAG].json and .md: a row per
minute, and the verdict: RSS growth over the second half (MB per 10 min), file descriptors and threads (min /
max), frames/s per camera (min / median / max of the per-minute rates), errors, CPU and load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results"

from serve import Serve, loadavg  # noqa: E402  (benchmarks/serve.py: the same way of starting the service)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def proc_figures(pid: int) -> dict:
    """RSS and its anonymous part (MB), open file descriptors and threads of a process, from /proc."""
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.strip()
    kb = lambda key: int(status.get(key, "0 kB").split()[0])  # noqa: E731
    return {"rss_mb": round(kb("VmRSS") / 1024, 1), "anon_mb": round(kb("RssAnon") / 1024, 1), "threads": int(status.get("Threads", 0)),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def jpeg_640(video: Path) -> bytes:
    """A frame of the cameras' own video as a JPEG (a photo of the same scene)."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    assert ok, video
    return cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


class Counts:
    def __init__(self) -> None:
        self.classify = self.classify_errors = 0
        self.sse = self.sse_errors = 0
        self.mjpeg = self.mjpeg_errors = 0
        self.health_errors = 0
        self.retries = 0  # classify requests sent again after the keep-alive race (see classify_client)
        self.error_samples: list[str] = []

    def error(self, what: str) -> None:
        if len(self.error_samples) < 20:
            self.error_samples.append(f"{time.strftime('%H:%M:%S')} {what}")


async def classify_client(client, body: bytes, stop: asyncio.Event, counts: Counts) -> None:
    """A JPEG once a second. A request that meets a connection closed before any answer is sent once more, as
    browsers and urllib3 do: the server closes kept-alive connections idle for --keep-alive seconds, and one
    can close just as a request leaves on it (HTTP/1.1's keep-alive race; on this busy host the client's own
    loop sometimes lags seconds, which widens the window). Such retries are counted and reported, not hidden."""
    import httpx

    async def post():
        return await client.post("/api/v1/classify", content=body, headers={"Content-Type": "image/jpeg"})

    await asyncio.sleep(random.random())
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            try:
                r = await post()
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
                counts.retries += 1
                r = await post()
            counts.classify += 1
            if r.status_code != 200:
                counts.classify_errors += 1
                counts.error(f"classify {r.status_code} {r.text[:120]}")
        except httpx.HTTPError as e:
            counts.classify_errors += 1
            counts.error(f"classify {type(e).__name__}: {e}")
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))


async def stream_client(client, path: str, stop: asyncio.Event, counts: Counts, kind: str) -> None:
    """Connect, read for 2-12 s, hang up (leaving a stream unfinished closes its connection), again."""
    import httpx

    while not stop.is_set():
        hold = random.uniform(2.0, 12.0)
        try:
            async with client.stream("GET", path) as r:
                setattr(counts, kind, getattr(counts, kind) + 1)
                if r.status_code != 200:
                    setattr(counts, f"{kind}_errors", getattr(counts, f"{kind}_errors") + 1)
                    counts.error(f"{kind} {r.status_code}")
                else:
                    deadline = time.monotonic() + hold
                    async for _ in r.aiter_raw():
                        if time.monotonic() > deadline or stop.is_set():
                            break
        except httpx.HTTPError as e:
            setattr(counts, f"{kind}_errors", getattr(counts, f"{kind}_errors") + 1)
            counts.error(f"{kind} {type(e).__name__}: {e}")
        await asyncio.sleep(random.uniform(0.0, 0.5))


async def sampler(serve: Serve, seconds: float, every: float, stop: asyncio.Event, counts: Counts, samples: list[dict]) -> None:
    import httpx

    t_start = time.monotonic()
    async with httpx.AsyncClient(base_url=serve.url, timeout=30) as client:
        while True:
            now = time.monotonic() - t_start
            try:
                health = (await client.get("/healthz")).status_code
                status = (await client.get("/api/v1/status")).json()
            except httpx.HTTPError as e:
                health, status = None, None
                counts.error(f"probe {type(e).__name__}: {e}")
            if health != 200:
                counts.health_errors += 1
                counts.error(f"healthz {health}")
            row = {"t_s": round(now, 1), **proc_figures(serve.proc.pid), "loadavg": loadavg(), "healthz": health,
                   "classify": counts.classify, "classify_errors": counts.classify_errors, "sse": counts.sse, "sse_errors": counts.sse_errors,
                   "mjpeg": counts.mjpeg, "mjpeg_errors": counts.mjpeg_errors}
            if status:
                row["frames"] = [c["counters"]["frames"] for c in status["cameras"]]
                row["states"] = [c["state"] for c in status["cameras"]]
                row["open_connections"] = status.get("http", {}).get("open_connections")
                row["sse_subscribers"] = status["events_subscribers"]
            samples.append(row)
            if now >= seconds:
                stop.set()
                return
            await asyncio.sleep(every)


async def soak(serve: Serve, body: bytes, minutes: float, every: float, classify_n: int, sse_n: int, mjpeg_n: int) -> tuple[list[dict], Counts]:
    stop = asyncio.Event()
    counts = Counts()
    samples: list[dict] = []
    import httpx

    # One client per kind: making an httpx client builds an SSL context (tens of ms of CPU), which, per reconnect
    # of 50 streams on a busy 2-core machine, stalled this process's loop for seconds.
    posts = httpx.AsyncClient(base_url=serve.url, timeout=60, limits=httpx.Limits(max_connections=classify_n))
    streams = httpx.AsyncClient(base_url=serve.url, timeout=30, limits=httpx.Limits(max_connections=sse_n + mjpeg_n, max_keepalive_connections=0))
    tasks = [asyncio.create_task(classify_client(posts, body, stop, counts)) for _ in range(classify_n)]
    tasks += [asyncio.create_task(stream_client(streams, "/api/v1/events", stop, counts, "sse")) for _ in range(sse_n)]
    tasks += [asyncio.create_task(stream_client(streams, "/stream/cam0.mjpg", stop, counts, "mjpeg")) for _ in range(mjpeg_n)]
    await sampler(serve, minutes * 60, every, stop, counts, samples)
    await asyncio.wait(tasks, timeout=60)
    await posts.aclose()
    await streams.aclose()

    async with httpx.AsyncClient(base_url=serve.url, timeout=30) as client:
        samples[-1]["http"] = (await client.get("/api/v1/status")).json().get("http")
    return samples, counts


def per_minute(samples: list[dict]) -> list[dict]:
    rows = []
    by_minute: dict[int, dict] = {}
    for s in samples:
        by_minute[int(s["t_s"] // 60)] = s  # the last sample of each minute
    prev = samples[0]  # the last sample with camera figures (a probe may fail)
    for minute in sorted(by_minute):
        s = by_minute[minute]
        dt = s["t_s"] - prev["t_s"]
        fps = [round((b - a) / dt, 2) for a, b in zip(prev.get("frames", []), s.get("frames", []))] if dt > 0 else []
        rows.append({**s, "minute": minute + 1, "fps": fps})
        if "frames" in s:
            prev = s
    return rows


def verdict(samples: list[dict], rows: list[dict], counts: Counts) -> dict:
    half = [s for s in samples if s["t_s"] >= samples[-1]["t_s"] / 2]
    span_min = (half[-1]["t_s"] - half[0]["t_s"]) / 60 if len(half) > 1 else 0.0
    slope = (half[-1]["rss_mb"] - half[0]["rss_mb"]) / span_min * 10 if span_min else 0.0
    fps = [x for r in rows[1:] for x in r["fps"]]  # the first minute includes start-up
    return {
        "rss_mb_start": samples[0]["rss_mb"], "rss_mb_end": samples[-1]["rss_mb"], "rss_mb_max": max(s["rss_mb"] for s in samples),
        "rss_mb_second_half": [half[0]["rss_mb"], half[-1]["rss_mb"]], "rss_growth_second_half_mb_per_10min": round(slope, 2),
        "anon_mb_start_end": [samples[0]["anon_mb"], samples[-1]["anon_mb"]],
        "anon_mb_min_max_after_1min": [min(s["anon_mb"] for s in samples if s["t_s"] >= 60), max(s["anon_mb"] for s in samples if s["t_s"] >= 60)],
        "fds_min_max": [min(s["fds"] for s in samples), max(s["fds"] for s in samples)],
        "threads_min_max": [min(s["threads"] for s in samples), max(s["threads"] for s in samples)],
        "fps_min_median_max": [min(fps), round(statistics.median(fps), 2), max(fps)] if fps else None,
        "classify": counts.classify, "classify_retries": counts.retries, "sse_connections": counts.sse, "mjpeg_connections": counts.mjpeg,
        "errors": counts.classify_errors + counts.sse_errors + counts.mjpeg_errors + counts.health_errors,
        "error_samples": counts.error_samples,
    }


def markdown(doc: dict) -> str:
    v = doc["verdict"]
    lines = [f"# `waste-edge serve` soak{' (' + doc['tag'] + ')' if doc['tag'] else ''}", "",
             f"Machine: {doc['cpu']}, {os.cpu_count()} cores (shared: the load average is in every row); command `{doc['command']}`;",
             f"serve environment: {doc['env'] or 'default'}. {doc['minutes']} minutes; 2 cameras looping a 640x480 video at 15 frames/s "
             f"(`--realtime`), {doc['classify_clients']} classify clients at 1 request/s, {doc['sse_clients']} SSE and {doc['mjpeg_clients']} MJPEG "
             "clients connecting for 2-12 s and dropping.", "",
             f"**RSS** {v['rss_mb_start']} -> {v['rss_mb_end']} MB (max {v['rss_mb_max']}; second half {v['rss_mb_second_half'][0]} -> "
             f"{v['rss_mb_second_half'][1]} MB, {v['rss_growth_second_half_mb_per_10min']} MB per 10 min); anonymous {v['anon_mb_start_end'][0]} -> "
             f"{v['anon_mb_start_end'][1]} MB. **File descriptors** {v['fds_min_max'][0]}-{v['fds_min_max'][1]}, **threads** "
             f"{v['threads_min_max'][0]}-{v['threads_min_max'][1]}. **Frames/s per camera** (per minute, after the first) min / median / max "
             f"{' / '.join(str(x) for x in v['fps_min_median_max'] or [])}. **{v['classify']} classify requests, {v['sse_connections']} SSE and "
             f"{v['mjpeg_connections']} MJPEG connections, {v['errors']} errors** ({v['classify_retries']} classify requests sent again after "
             "the keep-alive race, see `classify_client`).", "",
             "| minute | RSS MB | anon MB | fds | threads | frames/s per camera | classify | SSE conns | errors | open conns | loadavg |",
             "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in doc["minutes_table"]:
        errors = r["classify_errors"] + r["sse_errors"] + r["mjpeg_errors"]
        lines.append(f"| {r['minute']} | {r['rss_mb']} | {r['anon_mb']} | {r['fds']} | {r['threads']} | {', '.join(str(x) for x in r['fps'])} | "
                     f"{r['classify']} | {r['sse']} | {errors} | {r.get('open_connections')} | {r['loadavg']} |")
    if v["error_samples"]:
        lines += ["", "First errors: " + "; ".join(v["error_samples"])]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--classify-clients", type=int, default=10)
    ap.add_argument("--sse-clients", type=int, default=50)
    ap.add_argument("--mjpeg-clients", type=int, default=2)
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment of the serve process (repeatable)")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    ap.add_argument("--model", default=None, help="--model for serve (default: the embedded default model)")
    args = ap.parse_args()
    from waste_edge.runtime.demo import write_demo_video

    env = dict(kv.split("=", 1) for kv in args.env)
    video = write_demo_video(Path(tempfile.mkdtemp(prefix="waste-edge-soak-")) / "cam.mp4", seconds=4, fps=15, size=(640, 480))
    serve_args = ["--device", f"cam0={video}", "--device", f"cam1={video}", "--loop", "--realtime"] + (["--model", args.model] if args.model else [])
    load_before = loadavg()
    serve = Serve(serve_args, env)
    try:
        samples, counts = asyncio.run(soak(serve, jpeg_640(video), args.minutes, args.sample, args.classify_clients, args.sse_clients, args.mjpeg_clients))
    finally:
        code = serve.stop()
    rows = per_minute(samples)
    doc = {"tag": args.tag, "cpu": cpu_name(), "command": "python benchmarks/serve_soak.py " + " ".join(sys.argv[1:]), "env": env,
           "minutes": args.minutes, "classify_clients": args.classify_clients, "sse_clients": args.sse_clients, "mjpeg_clients": args.mjpeg_clients,
           "loadavg_before": load_before, "loadavg_after": loadavg(), "serve_exit": code, "serve_stderr_lines": len(serve.err),
           "serve_stderr_tail": serve.err[-20:], "http": samples[-1].get("http"), "verdict": verdict(samples, rows, counts), "minutes_table": rows, "samples": samples}
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"serve-soak-cpu{'-' + args.tag if args.tag else ''}"
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    md = markdown(doc)
    stem.with_suffix(".md").write_text(md)
    print(md)
    return 0 if doc["verdict"]["errors"] == 0 and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
