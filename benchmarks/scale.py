"""Single process vs Ray on this machine, and the wall time 250K images would take on 1, 8 and 64 Ray workers.

One command:

    .venv/bin/python benchmarks/scale.py ../shared/data/waste-sample/TEST --json benchmarks/results/scale-cpu.json

Measures, on the same files, in this order: `predict` in one process (the embedded default model, ONNX Runtime
on all cores) and `predict --ray` on a local cluster (one actor per core, one ONNX Runtime thread each); then
embedding extraction (`--encoder`, default ViT-B/32 with random weights: the study's encoder, same speed as
its real weights) in one process and on Ray. Ray's overhead is reported as it is: the cluster start, the time
to the first result (actor processes, model loading) and the whole job's wall time against the work itself.

The projection for 250K images is arithmetic on paper, not a measurement: wall time = first-result latency +
250,000 / (workers x the per-worker throughput measured here while busy). It assumes that every worker is a
core like these, that throughput scales linearly (no shared-storage, network or driver bottleneck) and that
the files are readable everywhere at the same speed. It says nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
STUDY_IMAGES = 250_000
PROJECT_WORKERS = (1, 8, 64)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _projection(rate: float, start_s: float) -> dict[str, float]:
    return {str(w): round(start_s + STUDY_IMAGES / (w * rate), 1) for w in PROJECT_WORKERS}


def bench_predict(files: list[Path], workers: int, tmp: Path) -> dict:
    from waste_edge.runtime.classifier import Classifier
    from waste_edge.runtime.predict import run_predict
    from waste_edge.scale.cluster import RayOptions
    from waste_edge.scale.predict import run_predict_ray

    with Classifier(None, "cpu") as clf:
        t0 = time.perf_counter()
        single = run_predict(clf, files, tmp / "single.csv", progress=False)
        single_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ray = run_predict_ray(None, files, tmp / "ray.csv", options=RayOptions(workers=workers, shards_dir=tmp / "shards"),
                          backend="cpu", progress=False)
    ray_s = time.perf_counter() - t0
    same = (tmp / "single.csv").read_bytes() == (tmp / "ray.csv").read_bytes()
    return _record("predict (default model, ONNX Runtime)", single.predictions + single.errors, single_s, ray_s, ray.ray, same)


def bench_extract(samples: list, encoder_id: str, workers: int, tmp: Path) -> dict:
    from waste_edge.scale.cluster import RayOptions
    from waste_edge.scale.extract import RayFeatureRunner
    from waste_edge.train.embeddings import TorchRunner, extract_embeddings
    from waste_edge.train.encoders import create_encoder

    enc = create_encoder(encoder_id)
    t0 = time.perf_counter()
    single = extract_embeddings(enc, samples, cache_dir=tmp / "c1", progress=False, runner=TorchRunner("cpu"))
    single_s = time.perf_counter() - t0
    runner = RayFeatureRunner(RayOptions(workers=workers), device="cpu")
    t0 = time.perf_counter()
    ray = extract_embeddings(enc, samples, cache_dir=tmp / "c2", progress=False, runner=runner)
    ray_s = time.perf_counter() - t0
    import numpy as np

    same = bool(np.allclose(single.features, ray.features, atol=1e-5))
    return _record(f"extraction ({enc.id}, PyTorch fp32)", len(samples), single_s, ray_s, runner.stats, same)


def _record(name: str, n: int, single_s: float, ray_s: float, stats, same: bool) -> dict:
    rate = stats.per_worker_rate() or 0.0
    work_s = n / (rate * stats.workers) if rate else float("nan")
    return {
        "name": name, "images": n, "same_results": same,
        "single_img_s": round(n / single_s, 2), "single_s": round(single_s, 1),
        "ray_img_s": round(n / ray_s, 2), "ray_s": round(ray_s, 1), "ray_workers": stats.workers,
        "ray_first_result_s": round(stats.start_s, 1), "ray_per_worker_img_s": round(rate, 2),
        "ray_overhead_s": round(ray_s - work_s, 1),
        "projected_250k_s": _projection(rate, stats.start_s) if rate else None,
    }


def to_markdown(doc: dict) -> str:
    lines = [f"Machine: {doc['machine']['cpus']} CPUs ({doc['machine']['processor']}), load average {doc['machine']['loadavg_before']} "
             f"before / {doc['machine']['loadavg_after']} after; Ray {doc['machine']['ray']}, local cluster started in "
             f"{doc['ray_start_s']} s.", "",
             "| job | images | single process img/s | Ray img/s (whole job) | Ray workers | first result after | per-worker img/s while busy | Ray overhead | same results |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        lines.append(f"| {r['name']} | {r['images']} | {r['single_img_s']} | {r['ray_img_s']} | {r['ray_workers']} | {r['ray_first_result_s']} s | "
                     f"{r['ray_per_worker_img_s']} | {r['ray_overhead_s']} s | {'yes' if r['same_results'] else 'NO'} |")
    lines += ["", f"Projected wall time for {STUDY_IMAGES:,} images (ON PAPER: first-result latency + images / (workers x per-worker "
              "img/s measured above); assumes linear scaling, workers like these cores, no storage/network/driver bottleneck):", "",
              "| job | " + " | ".join(f"{w} worker{'s' if w > 1 else ''}" for w in PROJECT_WORKERS) + " |",
              "|---|" + "---|" * len(PROJECT_WORKERS)]
    for r in doc["rows"]:
        if r["projected_250k_s"]:
            lines.append(f"| {r['name']} | " + " | ".join(_hours(r["projected_250k_s"][str(w)]) for w in PROJECT_WORKERS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="a folder of images (e.g. ../shared/data/waste-sample/TEST)")
    ap.add_argument("--limit", type=int, default=412, help="images for predict (default: %(default)s)")
    ap.add_argument("--extract-limit", type=int, default=96, help="images for extraction (default: %(default)s)")
    ap.add_argument("--encoder", default="clip:ViT-B-32/none", help="encoder for extraction (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Ray actors, one CPU each (default: the CPUs)")
    ap.add_argument("--target", choices=["predict", "extract", "both"], default="both")
    ap.add_argument("--json", type=Path, default=None, help="also write the record here")
    args = ap.parse_args(argv)

    import ray

    from waste_edge._io import list_images
    from waste_edge.data.discovery import Sample
    from waste_edge.scale.cluster import quiet_ray_data

    files = list_images(args.data)
    if not files:
        print(f"error: no images under {args.data}", file=sys.stderr)
        return 1
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="we-bench-"))
    os.environ["WASTE_EDGE_CACHE"] = str(tmp / "cache")
    temp = tempfile.mkdtemp(prefix="we-rb-", dir="/tmp")
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=args.workers, include_dashboard=False, _temp_dir=temp, log_to_driver=False,
             logging_level="ERROR", object_store_memory=200 * 2**20)
    start_s = time.perf_counter() - t0
    quiet_ray_data()
    rows = []
    try:
        if args.target in ("predict", "both"):
            print(f"predict: {min(len(files), args.limit)} images ...", file=sys.stderr, flush=True)
            rows.append(bench_predict(files[: args.limit], args.workers, tmp / "predict"))
        if args.target in ("extract", "both"):
            print(f"extraction: {min(len(files), args.extract_limit)} images with {args.encoder} ...", file=sys.stderr, flush=True)
            samples = [Sample(p, "B", "test") for p in files[: args.extract_limit]]
            rows.append(bench_extract(samples, args.encoder, args.workers, tmp / "extract"))
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    doc = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(), "ray": ray.__version__,
                    "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "ray_start_s": round(start_s, 1), "rows": rows, "projection": "on paper, see the module docstring",
    }
    print(to_markdown(doc))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
