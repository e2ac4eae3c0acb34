"""Which operators and which stages dominate a fused model's time: ONNX Runtime's own profiler, summed.

When a target is missed the next lever depends on where the time goes (the resize of the full frame, the
GEMMs of the encoder, a quantise / dequantise pair ORT could not fuse), so the benchmark can attach this
breakdown to each ONNX row: per op type, and per stage of the fused graph (preprocessing, encoder, head,
told apart by the `pre/` and `head/` prefixes the exporter gives their node names). The session comes from
the same loader as the runtime's CPU runner (`backends.onnxrt.load_session`), with the row's threads and
session config entries, so the kernels profiled are the kernels timed.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from waste_edge.runtime.metadata import INPUT_NAME, OUTPUT_PROBABILITIES

# Control-flow nodes are timed including the nodes of their subgraphs, which ORT also profiles one by one:
# counting both would count those nodes twice.
_CONTAINERS = frozenset({"If", "Loop", "Scan"})


def stage_of(node_name: str) -> str:
    """The fused graph's stage a node belongs to (the exporter prefixes preprocessing and head nodes)."""
    return "preprocessing" if node_name.startswith("pre/") else "head" if node_name.startswith("head/") else "encoder"


def profile_ops(model_path: str | Path, batch: np.ndarray, *, threads: int | None = None, session_config: dict[str, str] | None = None,
                iters: int = 5, top: int = 8) -> dict[str, Any]:
    """`ops`: per op type, milliseconds per run and share of the kernel time, largest first (at most `top`, rest
    summed); `stages`: the same per stage (preprocessing, encoder, head).

    Shares are the finding; the milliseconds are from a separate, profiled session at another moment than the
    timed rounds, so they are not comparable with the table's latencies on a busy machine."""
    from waste_edge.runtime.backends.onnxrt import load_session

    with tempfile.TemporaryDirectory(prefix="waste-edge-profile-") as tmp:
        sess = load_session(model_path, threads=threads, session_config=session_config, profile_prefix=Path(tmp) / "ort")
        feed = {INPUT_NAME: np.ascontiguousarray(batch)}
        n_warm = 1  # the first run (allocations, lazy initialisation) is not counted below
        sess.run([OUTPUT_PROBABILITIES], feed)
        for _ in range(iters):
            sess.run([OUTPUT_PROBABILITIES], feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    stages: dict[str, float] = defaultdict(float)
    run_ends = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    skip_before = run_ends[n_warm - 1]["ts"] + run_ends[n_warm - 1]["dur"] if len(run_ends) > n_warm else -1
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time") or e.get("ts", 0) < skip_before:
            continue
        op = str(e.get("args", {}).get("op_name", "?"))
        if op not in _CONTAINERS:
            ms = float(e.get("dur", 0)) / 1e3
            totals[op] += ms
            stages[stage_of(str(e["name"])[: -len("_kernel_time")])] += ms
    grand = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda kv: kv[1], reverse=True)
    rows = [{"op": op, "ms_per_run": ms / iters, "share": ms / grand} for op, ms in ranked[:top]]
    rest = sum(ms for _, ms in ranked[top:])
    if rest:
        rows.append({"op": "(other)", "ms_per_run": rest / iters, "share": rest / grand})
    split = [{"stage": k, "ms_per_run": stages.get(k, 0.0) / iters, "share": stages.get(k, 0.0) / grand} for k in ("preprocessing", "encoder", "head")]
    return {"ops": rows, "stages": split}
