"""A target timed alone in a fresh process: the yardstick the harness's own rows are checked against.

The harness runs every target in a worker of its own and interleaves them; if that arrangement handicapped
one of them (a process-wide OpenMP setting, a neighbour's spinning threads, a shared core), its row would
drift away from what a user measures running that pipeline by itself. This module is that user: a new
interpreter that loads only the one pipeline, with nothing but the caller's environment, and times batches of
the same synthetic frames the same way (median of `rounds` means of `iters` calls). It shares no code with
the worker on purpose. Run as `python -m waste_edge.bench.alone '<json spec>'`; `time_alone` does that.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any

from waste_edge.bench.machine import openmp_env
from waste_edge.errors import WasteEdgeError


def _measure(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from waste_edge.bench.frames import synthetic_frames

    w, h = spec["frame"]
    batch = int(spec["batch"])
    bgr = synthetic_frames(batch, w, h)
    if spec["kind"] == "reference":
        from waste_edge.train.runs import open_run

        threads = spec.get("threads")
        if not threads:
            import torch

            threads = torch.get_num_threads()
        target = open_run(spec["path"]).reference(threads)
        rgb = [np.ascontiguousarray(f[..., ::-1]) for f in bgr]

        def call() -> Any:
            return target.predict_proba(rgb)
    else:
        from waste_edge.runtime.classifier import Classifier

        target = Classifier(spec["path"], spec.get("backend", "cpu"), threads=spec.get("threads"), session_config=spec.get("session_config") or None)

        def call() -> Any:
            return target.predict_proba(bgr)

    for _ in range(int(spec.get("warmup", 3)) + 1):
        call()
    means = []
    for _ in range(int(spec["rounds"])):
        lat = []
        for _ in range(int(spec["iters"])):
            t0 = time.perf_counter()
            call()
            lat.append((time.perf_counter() - t0) * 1e3)
        means.append(sum(lat) / len(lat))
    return {"median_round_ms": statistics.median(means), "round_ms": means, "openmp_env": openmp_env()}


def time_alone(spec: dict[str, Any], timeout: float = 900.0) -> dict[str, Any]:
    """Time `spec` (kind, path, batch, frame, rounds, iters, threads...) in a fresh interpreter."""
    try:
        proc = subprocess.run([sys.executable, "-m", "waste_edge.bench.alone", json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise WasteEdgeError(f"the fresh-process timing took longer than {timeout:.0f} s") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise WasteEdgeError(f"the fresh-process timing failed: {err}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(_measure(json.loads(args[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
