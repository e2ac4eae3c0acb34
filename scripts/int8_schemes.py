#!/usr/bin/env python3
"""Compare the INT8 schemes of export/quantize.py on real photos: agreement with fp32, accuracy, size, speed.

Why: ONNX Runtime's u8 x s8 kernels saturate on x86 CPUs without VNNI (VPMADDUBSW adds two products into an
int16), so an INT8 model with 8-bit weights gives different answers on different CPUs. This script measures,
on the CPU it runs on, what each scheme costs and whether the integer arithmetic stays exact:

- EfficientNet-Lite0 (the default model's recipe, static QDQ calibrated on TRAIN): every scheme exported from
  the same run, then on all TEST photos: label agreement with the fp32 export, accuracy, max |dp|, file size,
  the largest |int8 weight| of a GEMM / conv (<= 64: saturation-free), and frame -> probabilities latency on
  a 640x480 frame at batch 1 and 16, all models interleaved in the same rounds.
- ViT-B/32 with random weights (`clip:ViT-B-32/none`, dynamic MatMul quantisation) with a head fitted on a
  small subset: agreement and embedding cosine with the fp32 export on --vit-photos TEST photos.

Timings on a shared machine: trust the ratios of one run, not absolute figures; /proc/loadavg is recorded.

    nice -n 10 .venv/bin/python scripts/int8_schemes.py --work /tmp/int8-schemes --json int8-schemes.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from waste_edge._io import list_images, write_json  # noqa: E402
from waste_edge.export.quantize import DEFAULT_INT8_SCHEME, INT8_SCHEMES  # noqa: E402


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def cpu_flags() -> str:
    try:
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(sorted(f for f in flags if f == "avx2" or f.startswith("avx512") or "vnni" in f)) or "none of avx2/avx512/vnni"


def export_variants(run_dir: Path, out_dir: Path, schemes: list[str], calib: Path | None) -> dict[str, Path]:
    """fp32 plus one INT8 export per scheme (kept between runs: delete --work to start over)."""
    from waste_edge.export.exporter import export

    paths = {"fp32": out_dir / "fp32.onnx"}
    if not paths["fp32"].exists():
        export(run_dir, "onnx", dynamic=True, out=paths["fp32"], log=print)
    for s in schemes:
        paths[s] = out_dir / f"int8-{s}.onnx"
        if _extra(paths[s]).get("int8_scheme") != s:  # missing, or left by another revision of the scheme table
            export(run_dir, "onnx", dynamic=True, int8=True, int8_scheme=s, calib=calib, out=paths[s], log=print)
    return paths


def _extra(path: Path) -> dict:
    import onnx

    if not path.exists():
        return {}
    props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    return json.loads(props.get("waste_edge.extra", "{}"))


def stage_outputs(paths: dict[str, Path], images: list[np.ndarray], threads: int) -> dict[str, dict[str, np.ndarray]]:
    """probabilities and embedding of every model on every RGB image (batch 1, as a camera feeds it)."""
    import onnx
    import onnxruntime as ort

    from waste_edge.export.fused import with_stage_outputs

    out = {}
    for name, path in paths.items():
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(with_stage_outputs(onnx.load(path)).SerializeToString(), opts, providers=["CPUExecutionProvider"])
        meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
        bgr = meta.get("waste_edge.channel_order", "BGR") == "BGR"
        probs, embs = [], []
        for rgb in tqdm(images, desc=name, unit="img", leave=False):
            x = np.ascontiguousarray((rgb[..., ::-1] if bgr else rgb)[None])
            p, e = sess.run(["probabilities", "embedding"], {"image": x})
            probs.append(p[0])
            embs.append(e[0])
        out[name] = {"probs": np.asarray(probs, np.float64), "emb": np.asarray(embs, np.float64)}
    return out


def compare(outs: dict[str, dict[str, np.ndarray]], paths: dict[str, Path], classes: list[str], truth: list[str]) -> dict[str, dict]:
    import onnx

    from waste_edge.export.quantize import int8_gemm_weight_peak

    ref = outs["fp32"]
    y = np.array([classes.index(t) for t in truth])
    rows = {}
    for name, o in outs.items():
        a, b = o["emb"], ref["emb"]
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
        rows[name] = {
            "n": int(len(y)),
            "accuracy": float((o["probs"].argmax(1) == y).mean()),
            "agreement_with_fp32": float((o["probs"].argmax(1) == ref["probs"].argmax(1)).mean()),
            "max_abs_dp": float(np.abs(o["probs"] - ref["probs"]).max()),
            "embedding_cosine_min": float(cos.min()),
            "embedding_cosine_mean": float(cos.mean()),
            "size_mb": round(paths[name].stat().st_size / 1e6, 2),
            "int8_weight_peak": int8_gemm_weight_peak(onnx.load(paths[name])),
        }
    return rows


def latency(paths: dict[str, Path], frame: np.ndarray, threads: int, rounds: int, n1: int, n16: int) -> dict[str, dict]:
    """Median frame -> probabilities time at batch 1 and 16, models interleaved round by round (A B C A B C ...)."""
    from waste_edge.runtime.classifier import Classifier

    clfs = {name: Classifier(p, "cpu", threads=threads) for name, p in paths.items()}
    batch = np.ascontiguousarray(np.repeat(frame[None], 16, axis=0))
    t1: dict[str, list[float]] = {n: [] for n in clfs}
    t16: dict[str, list[float]] = {n: [] for n in clfs}
    for c in clfs.values():  # warm-up: arena allocation, first-run kernel selection
        c.predict_proba(frame)
        c.predict_proba(batch)
    for _ in tqdm(range(rounds), desc="latency rounds", unit="round"):
        for name, c in clfs.items():
            for _ in range(n1):
                t0 = time.perf_counter()
                c.predict_proba(frame)
                t1[name].append(time.perf_counter() - t0)
            for _ in range(n16):
                t0 = time.perf_counter()
                c.predict_proba(batch)
                t16[name].append(time.perf_counter() - t0)
    for c in clfs.values():
        c.close()
    return {n: {"batch1_p50_ms": round(1e3 * statistics.median(t1[n]), 2), "batch16_img_s": round(16 / statistics.median(t16[n]), 1)} for n in clfs}


def vit_subset(data: Path, root: Path, per_class: int) -> Path:
    """A small Kaggle-layout folder of links into waste-sample: `per_class` photos per class and split."""
    for split in ("TRAIN", "TEST"):
        for label in ("B", "N"):
            files = list_images(data / split / label)
            pick = [files[i] for i in np.linspace(0, len(files) - 1, per_class).round().astype(int)]
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for f in pick:
                link = root / split / label / f.name
                if not link.exists():
                    link.symlink_to(f.resolve())
    return root


def decode(files: list[Path]) -> tuple[list[np.ndarray], list[str]]:
    from waste_edge.data.decode import load_rgb_array

    return [load_rgb_array(f) for f in tqdm(files, desc="decoding", unit="img", leave=False)], [f.parent.name for f in files]


def table(rows: dict[str, dict], lat: dict[str, dict] | None) -> str:
    cols = ["agreement_with_fp32", "accuracy", "max_abs_dp", "embedding_cosine_min", "size_mb", "int8_weight_peak"]
    head = ["variant", *cols] + (["batch1_p50_ms", "batch16_img_s", "b1 vs u8s8", "b16 vs u8s8"] if lat else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        cells = [name + (" (default)" if name == DEFAULT_INT8_SCHEME else "")]
        cells += [f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols]
        if lat:
            base = lat.get("u8s8")
            cells += [str(lat[name]["batch1_p50_ms"]), str(lat[name]["batch16_img_s"])]
            cells += [f"{lat[name]['batch1_p50_ms'] / base['batch1_p50_ms']:.2f}x", f"{lat[name]['batch16_img_s'] / base['batch16_img_s']:.2f}x"] if base else ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "waste-sample", help="Kaggle layout: TRAIN/ and TEST/ with B/ and N/")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "int8-schemes", help="scratch folder (runs, exports; reused)")
    ap.add_argument("--schemes", default=",".join(INT8_SCHEMES), help="comma-separated, from: " + ", ".join(INT8_SCHEMES))
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime / torch threads (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    ap.add_argument("--vit-photos", type=int, default=30, help="TEST (and TRAIN) photos per class for the ViT check; 0 skips it")
    ap.add_argument("--skip-lite0", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import torch

    torch.set_num_threads(args.threads)
    from waste_edge.train.pipeline import TrainConfig, train_linear

    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    doc: dict = {"cpu_flags": cpu_flags(), "loadavg_start": loadavg(), "onnxruntime": __import__("onnxruntime").__version__}
    print(f"CPU flags: {doc['cpu_flags']}; loadavg {doc['loadavg_start']}")
    if not args.skip_lite0:
        run = args.work / "lite0-run"
        if not (run / "card.json").exists():
            train_linear(TrainConfig(data=args.data, encoder="effnet-lite0", out=run, threads=args.threads), log=print)
        classes = json.loads((run / "card.json").read_text())["classes"]
        paths = export_variants(run, args.work / "lite0", schemes, args.data / "TRAIN")
        images, truth = decode(list_images(args.data / "TEST"))
        rows = compare(stage_outputs(paths, images, args.threads), paths, classes, truth)
        from PIL import Image

        frame = np.asarray(Image.fromarray(images[0]).resize((640, 480), Image.BILINEAR))[..., ::-1].copy()
        doc["lite0_latency_loadavg_before"] = loadavg()
        lat = latency(paths, frame, args.threads, args.rounds, n1=20, n16=3)
        doc["lite0_latency_loadavg_after"] = loadavg()
        doc["lite0"] = {n: rows[n] | lat[n] for n in rows}
        print(f"\nEfficientNet-Lite0 on {len(images)} TEST photos (loadavg {doc['lite0_latency_loadavg_before']} -> {doc['lite0_latency_loadavg_after']}):")
        print(table(rows, lat))
    if args.vit_photos > 0:
        sub = vit_subset(args.data, args.work / "vit-data", args.vit_photos)
        run = args.work / "vit-run"
        if not (run / "card.json").exists():
            train_linear(TrainConfig(data=sub, encoder="clip:ViT-B-32/none", out=run, threads=args.threads, cache_dir=args.work / "cache"), log=print)
        classes = json.loads((run / "card.json").read_text())["classes"]
        # Dynamic quantisation has uint8 activations only and no depthwise convs: one export per distinct weight format.
        distinct = {(INT8_SCHEMES[s].weights, INT8_SCHEMES[s].reduce_range): s for s in reversed(schemes) if INT8_SCHEMES[s].activations == "QUInt8"}
        paths = export_variants(run, args.work / "vit", [s for s in schemes if s in distinct.values()], None)
        images, truth = decode(list_images(sub / "TEST"))
        rows = compare(stage_outputs(paths, images, args.threads), paths, classes, truth)
        doc["vit"] = rows
        print(f"\nViT-B/32 (random weights, dynamic INT8) on {len(images)} TEST photos:")
        print(table(rows, None))
    doc["loadavg_end"] = loadavg()
    if args.json:
        write_json(args.json, doc)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
