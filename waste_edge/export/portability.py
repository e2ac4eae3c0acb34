"""Portability of a fused model: the same photos through ONNX Runtime and a second runtime (OpenVINO CPU).

Runtimes we cannot run here (TensorRT) will implement every op of the graph their own way; a second, independent
runtime on the CPU is the proxy. An antialiased `Resize` is implemented differently by each runtime (the dynamic
ViT-B/32 graph disagreed on 12 of 44 photos under OpenVINO), while the fixed-size graph's preprocessing is plain
Gather / MatMul / ReduceSum arithmetic on integers, which every IEEE float32 runtime computes exactly.

`openvino` is a test dependency only (the `[portability]` extra), imported here lazily.

    python -m waste_edge.export.portability --model M.onnx --data ../shared/data/waste-sample/TEST --limit 44
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from waste_edge.runtime.metadata import INPUT_NAME, OUTPUT_PROBABILITIES, ModelMetadata


def compare_runtimes(model_path: str | Path, images: list[Path], *, threads: int = 2) -> dict[str, Any]:
    """Probabilities of ONNX Runtime (CPU) and OpenVINO (CPU, f32 inference precision) on each photo, batch 1,
    resized to the model's frame size when it has one (as `parity` does): label agreement and max |dp|."""
    import onnxruntime as ort
    import openvino as ov

    from waste_edge.data.decode import DecodeError, load_rgb_frame
    from waste_edge.runtime.backends.onnxrt import load_session

    sess = load_session(model_path, threads=threads)
    meta = ModelMetadata.from_props(sess.get_modelmeta().custom_metadata_map)
    core = ov.Core()
    # f32 explicitly: OpenVINO CPU may otherwise pick bf16 on CPUs that have it.
    compiled = core.compile_model(str(model_path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads})
    ov_out = compiled.output(OUTPUT_PROBABILITIES)
    frame = meta.frame_size
    agree, dps, skipped = [], [], []
    for path in images:
        try:
            rgb = np.asarray(load_rgb_frame(path, frame), dtype=np.uint8)
        except DecodeError as e:
            skipped.append(f"{path}: {e}")
            continue
        x = np.ascontiguousarray((rgb[..., ::-1] if meta.channel_order == "BGR" else rgb)[None])
        p_ort = sess.run([OUTPUT_PROBABILITIES], {INPUT_NAME: x})[0][0].astype(np.float64)
        p_ov = np.asarray(compiled({INPUT_NAME: x})[ov_out])[0].astype(np.float64)
        agree.append(int(p_ort.argmax()) == int(p_ov.argmax()))
        dps.append(float(np.abs(p_ort - p_ov).max()))
    n = len(agree)
    return {
        "model": str(model_path), "openvino": ov.__version__, "onnxruntime": ort.__version__, "frame": list(frame) if frame else None,
        "n": n, "agreeing_labels": int(sum(agree)), "agreement": float(np.mean(agree)) if n else None,
        "max_abs_dp": float(max(dps)) if dps else None, "skipped": skipped,
    }


def main(argv: list[str] | None = None) -> int:
    from waste_edge.export.parity import parity_images

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="fused .onnx model")
    ap.add_argument("--data", type=Path, required=True, help="folder of photos")
    ap.add_argument("--limit", type=int, default=44, help="at most N photos (fixed-seed sample; default: %(default)s)")
    ap.add_argument("--max-dp", type=float, default=1e-4, help="pass bar for max |dp| (default: %(default)s)")
    args = ap.parse_args(argv)
    result = compare_runtimes(args.model, [p for p, _ in parity_images(args.data, args.limit)])
    print(json.dumps(result, indent=1))
    ok = result["n"] and result["agreement"] == 1.0 and result["max_abs_dp"] <= args.max_dp
    print(f"{'PASS' if ok else 'FAIL'}: {result['agreeing_labels']}/{result['n']} labels agree, max |dp| {result['max_abs_dp']:.2e} "
          f"(OpenVINO {result['openvino']} vs ONNX Runtime {result['onnxruntime']})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
