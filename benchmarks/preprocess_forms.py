#!/usr/bin/env python3
"""Preprocessing alone, interleaved in one run: the dynamic graph (ONNX Resize / ReduceSum) against the fixed-size
graph in each of its forms (Gather + Mul + ReduceSum, banded MatMul; box sums as ReduceSum or AveragePool).

    .venv/bin/python benchmarks/preprocess_forms.py [--rounds 7] [--iters 5] [--threads 2] [--json OUT]

Every form is checked equal to PIL on the frame it is timed on before it is timed. Medians over rounds, each round
runs every form once (A B C A B C ...), and /proc/loadavg is recorded next to the figures: on a shared machine only
the same-run ratios mean anything.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from waste_edge.bench.machine import load_average  # noqa: E402
from waste_edge.export.preprocess_fixed import build_fixed_preprocess_model  # noqa: E402
from waste_edge.export.preprocess_graph import build_preprocess_model  # noqa: E402
from waste_edge.runtime.backends.onnxrt import load_session  # noqa: E402
from waste_edge.train.encoders import LITE0_SPEC  # noqa: E402
from waste_edge.train.preprocess import PreprocessSpec, resize_crop  # noqa: E402

CLIP_SPEC = PreprocessSpec(224, "shortest", "bicubic", True, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
FORMS = {"fixed gather": {"form": "gather"}, "fixed band": {"form": "band"}, "fixed band + avgpool": {"form": "band", "box_form": "pool"}}




def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    sess = lambda m: load_session(m.SerializeToString(), threads=args.threads)  # noqa: E731
    rng = np.random.default_rng(0)
    rows = []
    for spec_name, spec in (("clip", CLIP_SPEC), ("lite0", LITE0_SPEC)):
        for w, h in ((640, 480), (1280, 720)):
            for batch in (1, 16):
                rgb = rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
                bgr = np.ascontiguousarray(rgb[..., ::-1])
                ref = np.asarray(resize_crop(Image.fromarray(rgb[0]), spec)).transpose(2, 0, 1)
                sessions = {"dynamic": sess(build_preprocess_model(spec, "BGR"))}
                sessions.update({k: sess(build_fixed_preprocess_model(spec, "BGR", (h, w), **kw)) for k, kw in FORMS.items()})
                exact = {k: bool(np.array_equal(s.run(None, {"image": bgr})[0][0], ref)) for k, s in sessions.items()}
                times: dict[str, list[float]] = {k: [] for k in sessions}
                load_before = load_average()
                for _ in range(args.rounds):
                    for k, s in sessions.items():
                        s.run(None, {"image": bgr})
                        t0 = time.perf_counter()
                        for _ in range(args.iters):
                            s.run(None, {"image": bgr})
                        times[k].append((time.perf_counter() - t0) / args.iters * 1e3)
                med = {k: float(np.median(v)) for k, v in times.items()}
                row = {"spec": spec_name, "frame": f"{w}x{h}", "batch": batch, "ms": med, "exact_vs_pil": exact,
                       "loadavg": [load_before, load_average()]}
                rows.append(row)
                print(f"{spec_name:5} {w}x{h} b{batch:<2} " + "  ".join(f"{k} {v:7.2f} ms{'' if exact[k] else ' (NOT EXACT)'}" for k, v in med.items())
                      + f"   load {load_before}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
