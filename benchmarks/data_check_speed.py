"""Benchmark of `waste-edge data check` hashing speed (issue 7: >= 300 images/s on 2 cores, 200x200 JPEGs).

Hashes every image of a dataset from scratch (no cache), `--repeat` times, and records images/s of the
hashing stage and of the whole check, with the CPU time per image (which, unlike images/s, does not depend on
what else the machine is running) and the load average before the run, so a figure taken on a busy shared
machine can be recognised as such.

    .venv/bin/python benchmarks/data_check_speed.py ../shared/data/waste-sample --workers 2 --out benchmarks/results/data-check-speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path


def _cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="dataset folder or CSV manifest")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="write the JSON record here too")
    args = ap.parse_args(argv)

    from waste_edge.data.check import check_dataset

    runs = []
    for _ in range(args.repeat):
        load = os.getloadavg()[0]
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        r = check_dataset(args.data, use_cache=False, workers=args.workers, progress=False)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        s = r.totals()
        runs.append(
            {
                "load_avg_1min_before": round(load, 2),
                "images": s["files"],
                "hashed": r.hashed,
                "hash_seconds": round(r.hash_seconds, 3),
                "hash_images_per_second": round(r.hashed / r.hash_seconds, 1),
                "check_wall_seconds": round(wall, 3),
                "check_images_per_second": round(s["files"] / wall, 1),
                "cpu_ms_per_image": round(1000 * cpu / max(s["files"], 1), 3),
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    best = max(runs, key=lambda x: x["hash_images_per_second"])
    record = {
        "benchmark": "data check hashing",
        "data": str(args.data),
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "best_hash_images_per_second": best["hash_images_per_second"],
        "runs": runs,
        "findings": {k: s[k] for k in ("files", "unreadable", "exact_duplicate_groups", "near_duplicate_pairs",
                                       "near_duplicate_pairs_cross_split", "leaked_files", "name_tagged_files")},
    }
    print(json.dumps(record, indent=1))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
