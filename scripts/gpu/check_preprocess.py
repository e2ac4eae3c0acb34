#!/usr/bin/env python3
"""GPU check: the fixed-size preprocessing arithmetic (Pillow's taps, float32, hi/lo weight halves, nested-floor
rounding) is exact on CUDA float32 hardware too, with TF32 matrix multiplies allowed and not.

The engine path cannot be built on machines without TensorRT, but its claim can be tested where a CUDA GPU and
PyTorch exist: this check applies `pil_taps.fixed_steps` with torch on the GPU exactly as the ONNX graph does (the
Gather + Mul + ReduceSum form, and the MatMul form with TF32 on, which is what TensorRT may pick) and compares
with PIL on adversarial frames (all-255, checkerboards, noise) at camera sizes. Protocol: scripts/gpu/README.md.

    python scripts/gpu/check_preprocess.py --json OUT.json [--cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

FRAMES = [(640, 480), (1280, 720), (480, 640), (1920, 1080)]


def _frames(w: int, h: int, seed: int) -> dict[str, np.ndarray]:
    check = ((np.indices((h, w)).sum(0) % 2) * 255).astype(np.uint8)
    return {"white": np.full((h, w, 3), 255, np.uint8), "checker": np.stack([check, 255 - check, check], -1),
            "noise": np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)}


def run_steps_torch(torch, rgb: np.ndarray, steps: list, device: str, form: str):
    """The graph's float32 arithmetic with torch on `device` (CHW float32)."""
    from waste_edge.export.pil_taps import HALF_BITS, PRECISION_BITS, BoxMean, Crop, Pass, reduce_split

    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).to(device).float()
    inv = 2.0**-HALF_BITS
    for s in steps:
        if isinstance(s, Crop):
            x = x[:, s.top : s.top + s.height, s.left : s.left + s.width]
        elif isinstance(s, Pass):
            axis = 1 + s.axis
            out, k = s.taps.index.shape
            if s.taps.rounding == "sum":
                idx = torch.from_numpy(s.taps.index).to(device)
                g = torch.index_select(x, axis, idx.reshape(-1))
                shape = list(x.shape)
                shape[axis : axis + 1] = [out, k]
                x = g.reshape(shape).sum(dim=axis + 1)
                continue
            hi, lo = (torch.from_numpy(h.astype(np.float32)).to(device) for h in s.taps.halves())
            xa = x.movedim(axis, -1)  # [C, other, n_in]
            if form == "gather":
                g = xa[..., torch.from_numpy(s.taps.index).to(device)]  # [C, other, out, k]
                hs, ls = (g * hi).sum(-1), (g * lo).sum(-1)
            else:
                n_in = xa.shape[-1]
                dense = torch.zeros(2 * out, n_in, device=device)
                rows = torch.arange(out, device=device).repeat_interleave(k)
                cols = torch.from_numpy(s.taps.index.reshape(-1)).to(device)
                dense.index_put_((rows, cols), hi.reshape(-1), accumulate=True)
                dense.index_put_((rows + out, cols), lo.reshape(-1), accumulate=True)
                y = xa @ dense.T
                hs, ls = y[..., :out], y[..., out:]
            carry = torch.floor((ls + float(1 << (PRECISION_BITS - 1))) * inv)
            x = torch.clamp(torch.floor((hs + carry) * inv), 0, 255).movedim(-1, axis)
        elif isinstance(s, BoxMean):
            amend, m_hi, m_lo = reduce_split(s.kk)
            t = x + amend
            scaled = t * (m_hi * 2.0**-16)
            if m_lo:
                scaled = scaled + torch.floor(t * (m_lo * 2.0**-8)) * 2.0**-16
            x = torch.floor(scaled)
    return x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, required=True, help="where the result document goes")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU when there is no GPU (a smoke test of this script)")
    args = ap.parse_args(argv)
    doc = {"name": "preprocess", "status": "skipped", "figures": {}, "untested": [], "notes": ""}
    try:
        import torch
    except ImportError:
        doc["notes"] = "torch is not installed"
        doc["untested"].append("fixed-size preprocessing exactness on CUDA float32 / TF32: no torch")
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        return 0
    from waste_edge.export.pil_taps import fixed_steps
    from waste_edge.train.encoders import LITE0_SPEC
    from waste_edge.train.preprocess import PreprocessSpec, resize_crop

    clip = PreprocessSpec(224, "shortest", "bicubic", True, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if not cuda and not args.cpu:
        doc["notes"] = "no CUDA GPU found (torch.cuda.is_available() is False)"
        doc["untested"].append("fixed-size preprocessing exactness on CUDA float32 / TF32: no CUDA GPU")
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        return 0
    worst, frames, seconds = 0.0, 0, 0.0
    for tf32 in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        for name, spec in (("clip", clip), ("lite0", LITE0_SPEC)):
            for i, (w, h) in enumerate(FRAMES):
                steps = fixed_steps(spec, h, w)
                for kind, rgb in _frames(w, h, i).items():
                    ref = np.asarray(resize_crop(Image.fromarray(rgb), spec)).transpose(2, 0, 1).astype(np.float32)
                    for form in ("gather", "matmul"):
                        t0 = time.perf_counter()
                        out = run_steps_torch(torch, rgb, steps, device, form)
                        if cuda:
                            torch.cuda.synchronize()
                        seconds += time.perf_counter() - t0
                        d = float(np.abs(out.cpu().numpy() - ref).max())
                        frames += 1
                        if d > worst:
                            worst = d
                            doc["notes"] = f"worst: {name} {w}x{h} {kind} {form} tf32={tf32}: {d:g} grey levels"
    doc["figures"] = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "frames_checked": frames,
                      "max_grey_level_difference": worst, "mean_ms_per_frame": round(1000 * seconds / frames, 3)}
    ok = worst == 0.0
    doc["status"] = ("ok" if ok else "failed") if cuda else "skipped"
    if not cuda:
        doc["untested"].append("fixed-size preprocessing exactness on CUDA float32 / TF32: ran on the CPU only (--cpu)")
    doc["notes"] = doc["notes"] or ("exact on every frame" if ok else "")
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
