#!/usr/bin/env python3
"""Every INT8 lever for the default model's encoder (EfficientNet-Lite0), in one table, from one command.

Why: the portable scheme (7-bit GEMM weights, README "INT8 that gives the same answers on every CPU") cost accuracy
(waste-sample TEST: 97.57 % vs fp32 97.82 %, embedding cosine min 0.857) and INT8 was only ~1.2-1.4x faster than
fp32 at batch 1 on an AVX2 CPU. This script measures what each lever buys, so the default keeps only what the
figures support.

Against overfitting, the levers are chosen on a VALIDATION split carved from TRAIN (30 %, duplicate groups of
`data check` kept on one side, stratified): the VAL head is fitted on the other 70 % (FIT) and calibration images come
from FIT (a seeded shuffle: every set size is a random sample). Every lever is also measured on TEST, with the head
fitted on all of TRAIN as `make default-model` fits it (the default model's own TEST figures, calibrated on a sample
of all of TRAIN, are on its card).

Columns: agreement of INT8 labels with the fp32 export's, accuracy of both, the embedding cosine (min, mean) and
max |dp| between INT8 and fp32, and frame -> probabilities latency at batch 1 on a 640x480 frame (all deployable
rows interleaved in the same rounds, so ratios count, not absolute times on a shared machine). Rows marked
"simulated" are bounds, computed with ONNX Runtime's optimisations off (float arithmetic on the quantised values):
not deployable as they are, they say how much a lever could buy at most. A second table: per-layer sensitivity
(one layer's weights, or one tensor's activations, quantised alone in the fp32 graph): which layers lose most.
Quantisation-aware fine-tuning (benchmarks/int8_qat.py) is timed for one training step, not run to the end: see
`qat_step_seconds`.

    .venv/bin/python benchmarks/int8_levers.py [--data ../shared/data/waste-sample] [--work build/int8-levers]

About 20 minutes on 2 cores; peak memory about 2 GB (calibration reads 16 images at a time).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))  # int8_qat

from waste_edge.bench.machine import load_average  # noqa: E402
from waste_edge.export.quantize import INT8_SCHEMES, Int8Scheme  # noqa: E402

TODAY = "u8s8-7bit"  # the default scheme before this study
VAL_FRACTION = 0.3
SEED = 0
POOL = 400  # FIT photos kept as pixels for calibration (the largest set size measured)
SENSITIVITY_IMAGES = 32


class ArrayReader:
    """onnxruntime CalibrationDataReader over pixel arrays already in memory (the levers calibrate many times); it
    can be sliced (`set_range`), so histogram calibration reads a few images at a time (export/quantize.py)."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels, self.i, self.end = pixels, 0, len(pixels)

    def __len__(self) -> int:
        return len(self.pixels)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.i, self.end = start_index, min(end_index, len(self.pixels))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= self.end:
            return None
        self.i += 1
        return {"pixels": self.pixels[self.i - 1 : self.i]}

    def rewind(self) -> None:
        self.i, self.end = 0, len(self.pixels)


@dataclass(frozen=True)
class Lever:
    name: str
    what: str
    scheme: Int8Scheme
    calib: int = 200  # calibration images (seeded sample of FIT)
    simulate: Callable[[Any, "Study"], Any] | None = None  # a bound: rewrite the QDQ encoder, run without optimisations


@dataclass
class Study:
    """Everything the levers share: pixels, fp32 embeddings, heads, the fp32 encoder."""

    work: Path
    fp32: Any  # onnx.ModelProto after quant_pre_process (the graph the quantiser sees)
    pre_bgr: Any
    calib_pool: np.ndarray  # FIT pixels, seeded shuffle: any prefix is a random sample
    val: "Split"
    test: "Split"


@dataclass(frozen=True)
class Split:
    """Photos of one split as pixels, their labels, fp32 embeddings and the head their figures are read with."""

    pixels: np.ndarray
    y: np.ndarray
    e32: np.ndarray
    head: Any


def _session(model: Any, optimise: bool = True):
    import onnx

    from waste_edge.runtime.backends.onnxrt import load_session

    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else Path(model).read_bytes()
    return load_session(data, threads=2, optimization="all" if optimise else "disabled", name="lever model")


def embed(model: Any, pixels: np.ndarray, optimise: bool = True, batch: int = 8) -> np.ndarray:
    sess = _session(model, optimise)
    name = sess.get_outputs()[0].name
    return np.concatenate([sess.run([name], {"pixels": pixels[i : i + batch]})[0] for i in range(0, len(pixels), batch)]).astype(np.float64)


def compare(e32: np.ndarray, e8: np.ndarray, head: Any, y: np.ndarray) -> dict[str, Any]:
    cos = (e32 * e8).sum(1) / np.maximum(np.linalg.norm(e32, axis=1) * np.linalg.norm(e8, axis=1), 1e-30)
    p32, p8 = head.predict_proba(e32), head.predict_proba(e8)
    return {"n": int(len(y)), "agreement": float((p32.argmax(1) == p8.argmax(1)).mean()), "disagree": int((p32.argmax(1) != p8.argmax(1)).sum()),
            "acc_fp32": float((p32.argmax(1) == y).mean()), "acc_int8": float((p8.argmax(1) == y).mean()),
            "cos_min": float(cos.min()), "cos_mean": float(cos.mean()), "max_dp": float(np.abs(p32 - p8).max())}


def pixels_of(pre_rgb: Any, files: list[Path], desc: str) -> np.ndarray:
    from waste_edge.export.quantize import PixelsReader

    reader = PixelsReader(pre_rgb, files, progress=True, desc=desc)
    out = np.concatenate([feed["pixels"] for feed in iter(reader.get_next, None)])
    if reader.skipped:
        raise SystemExit(f"unreadable photos would misalign labels: {reader.skipped[:3]}")
    return out


def embed_files(pre_rgb: Any, fp32: Any, files: list[Path], keep: list[int], desc: str) -> tuple[np.ndarray, np.ndarray]:
    """fp32 embeddings of `files`, read 64 photos at a time, and the pixels of those at positions `keep` (in that
    order): the FIT photos are never all in memory at once."""
    embeddings, kept = [], {}
    wanted = set(keep)
    for start in range(0, len(files), 64):
        px = pixels_of(pre_rgb, files[start : start + 64], f"{desc} {start}-{min(start + 64, len(files))} of {len(files)}")
        embeddings.append(embed(fp32, px))
        kept |= {i: px[i - start] for i in range(start, start + len(px)) if i in wanted}
    return np.concatenate(embeddings), np.stack([kept[i] for i in keep])


def split_train(train_dir: Path) -> tuple[list[Path], list[str], np.ndarray]:
    """TRAIN photos, labels and a VAL mask: duplicate groups (`data check`) dealt stratified, 30 % to VAL."""
    from waste_edge.data.check import check_dataset
    from waste_edge.data.split_groups import assign_groups, group_label

    check = check_dataset(train_dir, progress=True)
    files = [Path(f.path) for f in check.files]
    labels = [f.label for f in check.files]
    groups = check.groups()
    side = assign_groups([len(g) for g in groups], [group_label([labels[i] for i in g]) for g in groups], VAL_FRACTION, SEED)
    val = np.zeros(len(files), bool)
    for g, s in zip(groups, side):
        val[g] = s == "test"
    return files, labels, val


def quantize(study: Study, lever: Lever) -> Any:
    """The lever's INT8 encoder. Ranges are cached per method and set size (the same images every run), so levers
    that share a calibration compute it once; encoders are rebuilt every run (the code they measure may change)."""
    from waste_edge.export.quantize import quantize_static_pixels

    cache = study.work / f"calib-{lever.scheme.calibration}-{lever.calib}.json"
    model, _ = quantize_static_pixels(study.fp32, ArrayReader(study.calib_pool[: lever.calib]), lever.scheme, cache=cache)
    return model


def qat_step_seconds(study: Study) -> dict[str, Any]:
    """Quantisation-aware fine-tuning (benchmarks/int8_qat.py) run for two steps of 16 FIT photos, end to end (fold,
    fake-quantised forward, backward, the tuned weights written back into the ONNX encoder): its cost per step.
    A run long enough to move the weights (a few epochs of the FIT photos) does not fit this table's time."""
    from int8_qat import qat_weights

    from waste_edge.train.encoders import create_encoder

    t0, timings = time.perf_counter(), {}
    qat_weights(create_encoder("effnet-lite0"), study.fp32, study.calib_pool[:32], study.calib_pool[:32], epochs=1, log=lambda _: None, timings=timings)
    step = timings["train_seconds"] / timings["steps"]
    fit = len(study.calib_pool)
    return {"seconds_per_step_of_16": round(step, 1), "steps": timings["steps"], "seconds_all": round(time.perf_counter() - t0, 1),
            "minutes_per_epoch_of_pool": round(step / 16 * fit / 60, 1), "pool": fit}


# --- bounds (simulated) ------------------------------------------------------------------------------------------

def per_channel_bottleneck(qdq: Any, study: Study) -> Any:
    """Upper bound of cross-layer equalisation: the linear bottleneck tensors (the only ones CLE can rescale here:
    everywhere else a ReLU6 sits between two convs and its fixed 6 breaks the scale equivariance) quantised per
    channel with their own min / max, as perfect equalisation would make them."""
    import onnx
    from onnx import numpy_helper

    from waste_edge.export.quantize import QuantizationError

    model = copy.deepcopy(qdq)
    inits = {t.name: t for t in model.graph.initializer}
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] != "pixels"]
    signed = [n for n in qs if numpy_helper.to_array(inits[n.input[2]]).item() not in (0,)]  # zero point > 0: a tensor with negatives
    tensors = sorted({n.input[0] for n in signed})
    if not tensors:
        raise QuantizationError("no signed activation tensors found")
    lo, hi = _channel_ranges(study.fp32, tensors, study.calib_pool[:200])
    for n in signed:
        t = n.input[0]
        lo_c, hi_c = np.minimum(lo[t], 0), np.maximum(hi[t], 0)
        scale = np.maximum((hi_c - lo_c) / 255, 1e-6).astype(np.float32)  # a channel that is always 0 still gets a scale
        zp = np.clip(np.round(-lo_c / scale), 0, 255).astype(np.uint8)
        s_name, z_name = f"{t}_pc_scale", f"{t}_pc_zp"
        model.graph.initializer.extend([numpy_helper.from_array(scale, s_name), numpy_helper.from_array(zp, z_name)])
        pair = [n] + [m for m in model.graph.node if m.op_type == "DequantizeLinear" and m.input[0] == n.output[0]]
        for m in pair:
            m.input[1], m.input[2] = s_name, z_name
            m.attribute.extend([onnx.helper.make_attribute("axis", 1)])
    return model


def _channel_ranges(fp32: Any, tensors: list[str], pixels: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    import onnx

    model = copy.deepcopy(fp32)
    model.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors)
    sess = _session(model)
    lo = {t: np.full(0, np.inf) for t in tensors}
    hi = {t: np.full(0, -np.inf) for t in tensors}
    for i in range(0, len(pixels), 8):
        for t, v in zip(tensors, sess.run(tensors, {"pixels": pixels[i : i + 8]})):
            a, b = v.min(axis=(0, 2, 3)), v.max(axis=(0, 2, 3))
            lo[t] = a if lo[t].size == 0 else np.minimum(lo[t], a)
            hi[t] = b if hi[t].size == 0 else np.maximum(hi[t], b)
    return lo, hi


# --- per-layer sensitivity ----------------------------------------------------------------------------------------

def sensitivity(study: Study, today: Any, n_images: int = SENSITIVITY_IMAGES) -> list[dict[str, Any]]:
    """Each conv's weights quantised alone (the scheme's rounding: 7-bit per channel, 8-bit depthwise), and each
    activation tensor that `today`'s encoder quantises, alone with its calibrated range, in the otherwise fp32 graph:
    the mean cosine of VAL embeddings with the fp32 ones. Ranges from the MinMax calibration cache of 200 images."""
    from onnx import numpy_helper
    from onnxruntime.quantization import load_tensors_data

    px = study.val.pixels[:n_images]
    e32 = study.val.e32[:n_images]
    rows = []
    inits = {t.name: t for t in study.fp32.graph.initializer}
    for node in (n for n in study.fp32.graph.node if n.op_type == "Conv"):
        model = copy.deepcopy(study.fp32)
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        depthwise = next((a.i for a in node.attribute if a.name == "group"), 1) > 1
        qmax = 127 if depthwise else 64
        scale = np.abs(w).reshape(len(w), -1).max(1).reshape(-1, 1, 1, 1) / qmax
        wq = (np.clip(np.round(w / np.where(scale == 0, 1, scale)), -qmax, qmax) * scale).astype(np.float32)
        for t in model.graph.initializer:
            if t.name == node.input[1]:
                t.CopyFrom(numpy_helper.from_array(wq, t.name))
        kind = "depthwise" if depthwise else "stem" if node.name == _first_conv(study.fp32).name else "pointwise"
        rows.append({"what": f"weights of {node.name} ({kind}, "
                             f"{w.shape[1] * w.shape[2] * w.shape[3]} inputs/out)", "cos_mean": _cos_mean(model, px, e32, optimise=True)})
    ranges = load_tensors_data(study.work / "calib-minmax-200.json")
    quantised = {n.input[0] for n in today.graph.node if n.op_type == "QuantizeLinear"} - {"pixels"}
    for name, td in ranges.data.items():
        if name not in quantised:
            continue  # a tensor the QDQ graph does not quantise (e.g. a conv output before its ReLU6)
        lo, hi = float(min(np.min(td.range_value[0]), 0)), float(max(np.max(td.range_value[1]), 0))
        model = _with_fake_quant(study.fp32, name, lo, hi)
        if model is not None:
            rows.append({"what": f"activations {name} (range {lo:.1f}..{hi:.1f})", "cos_mean": _cos_mean(model, px, e32)})
    return sorted(rows, key=lambda r: r["cos_mean"])


def _first_conv(fp32: Any) -> Any:
    return next(n for n in fp32.graph.node if n.op_type == "Conv")


def _cos_mean(model: Any, px: np.ndarray, e32: np.ndarray, optimise: bool = False) -> float:
    """Weights rounded in a float graph run optimised; a QuantizeLinear / DequantizeLinear pair must not be (ONNX
    Runtime would fuse it into an integer conv with its own 8-bit weights)."""
    e = embed(model, px, optimise=optimise)
    return float(((e * e32).sum(1) / (np.linalg.norm(e, axis=1) * np.linalg.norm(e32, axis=1))).mean())


def _with_fake_quant(fp32: Any, tensor: str, lo: float, hi: float) -> Any:
    import onnx
    from onnx import helper, numpy_helper

    consumers = [n for n in fp32.graph.node if tensor in n.input]
    if not consumers:
        return None
    model = copy.deepcopy(fp32)
    scale = np.float32((hi - lo) / 255 or 1.0)
    zp = np.uint8(np.clip(round(-lo / scale), 0, 255))
    model.graph.initializer.extend([numpy_helper.from_array(np.array(scale), f"{tensor}_fq_s"), numpy_helper.from_array(np.array(zp), f"{tensor}_fq_z")])
    q, dq = f"{tensor}_fq_q", f"{tensor}_fq"
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            if name == tensor:
                n.input[i] = dq
    model.graph.node.extend([helper.make_node("QuantizeLinear", [tensor, f"{tensor}_fq_s", f"{tensor}_fq_z"], [q]),
                             helper.make_node("DequantizeLinear", [q, f"{tensor}_fq_s", f"{tensor}_fq_z"], [dq])])
    sorted_model = onnx.helper.make_model(model.graph, opset_imports=model.opset_import)
    return _toposort(sorted_model)


def _toposort(model: Any) -> Any:
    import graphlib

    producer = {o: k for k, n in enumerate(model.graph.node) for o in n.output}
    order = graphlib.TopologicalSorter({k: {producer[i] for i in n.input if i in producer} for k, n in enumerate(model.graph.node)}).static_order()
    nodes = [model.graph.node[k] for k in order]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


# --- latency ------------------------------------------------------------------------------------------------------

def fused(study: Study, enc: Any, head: Any, out: Path) -> Path:
    import onnx

    from waste_edge.export.fused import build_head_model, compose_fused, set_io_dims

    model = compose_fused(study.pre_bgr, enc, build_head_model(head, opset=18))
    set_io_dims(model, None, None)
    onnx.save(model, out)
    return out


def latency(paths: dict[str, Path], frame: np.ndarray, rounds: int, calls: int = 10) -> dict[str, dict[str, float]]:
    """Median frame -> probabilities time at batch 1, every model in every round (A B C A B C ...), and each one's
    speed relative to the first (median over rounds of the paired ratios)."""
    sessions = {k: _session(p) for k, p in paths.items()}
    for s in sessions.values():
        for _ in range(3):
            s.run(["probabilities"], {"image": frame})
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            one = []
            for _ in range(calls):
                t0 = time.perf_counter()
                s.run(["probabilities"], {"image": frame})
                one.append(time.perf_counter() - t0)
            times[k].append(statistics.median(one))
    first = next(iter(times))
    return {k: {"batch1_ms": 1e3 * statistics.median(v), "speed_vs_fp32": statistics.median(a / b for a, b in zip(times[first], v))}
            for k, v in times.items()}


# --- the study ----------------------------------------------------------------------------------------------------

def levers() -> list[Lever]:
    today = INT8_SCHEMES[TODAY]
    both = INT8_SCHEMES["u8s8-7bit-bc-stem"]  # bias correction + float stem: the most accurate portable recipe
    bc, stem = replace(today, name="bc", bias_correction=True), replace(today, name="stem", float_stem=True)
    return [
        Lever(TODAY, "the default before this study: 7-bit GEMM weights (8-bit depthwise), MinMax on 200 images", today),
        Lever("calib-50", "calibration set size: 50 images", today, calib=50),
        Lever("calib-400", "calibration set size: 400 images", today, calib=400),
        Lever("percentile", "calibration method: Percentile 99.999", replace(today, name="percentile", calibration="percentile")),
        Lever("entropy", "calibration method: Entropy (KL)", replace(today, name="entropy", calibration="entropy")),
        Lever("bias-correction", "bias correction (Nagel et al. 2019): b -= dW . E[x]", bc),
        Lever("float-stem", "mixed precision: the stem (3x3 conv on raw pixels) in fp32", stem),
        Lever(both.name, "bias correction + float stem", both),
        Lever(f"{both.name}+percentile", "bias correction + float stem with Percentile calibration", replace(both, name="p", calibration="percentile")),
        Lever("8bit-bound", "simulated: 8-bit GEMM weights (not portable: saturates on AVX2 without VNNI) with bias correction + "
              "float stem: what 7 bits cost", replace(both, name="8bit", reduce_range=False, portable=False), simulate=lambda m, s: m),
        Lever("cle-bound", "simulated: bias correction + float stem with the linear-bottleneck tensors quantised per channel "
              "(the most cross-layer equalisation could give; CLE itself is not implemented)", both, simulate=per_channel_bottleneck),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "waste-sample")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "int8-levers", help="scratch folder (quantised encoders, calibration caches; reused)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "int8-levers", help="writes <out>.json and <out>.md")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved latency rounds")
    ap.add_argument("--no-sensitivity", action="store_true", help="skip the per-layer table (about 100 extra model runs)")
    ap.add_argument("--no-qat", action="store_true", help="skip timing one quantisation-aware training step")
    args = ap.parse_args(argv)

    import onnx
    import torch
    from onnxruntime.quantization import quant_pre_process

    torch.set_num_threads(2)
    from waste_edge.data.discovery import discover
    from waste_edge.export.fused import export_encoder
    from waste_edge.export.preprocess_graph import build_preprocess_model
    from waste_edge.runtime.cpu import cpu_info
    from waste_edge.train.encoders import create_encoder
    from waste_edge.train.head import fit_head

    t_start = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"command": "python benchmarks/int8_levers.py", "cpu": cpu_info().to_dict(), "load_start": load_average(),
                           "onnxruntime": __import__("onnxruntime").__version__, "val_fraction": VAL_FRACTION}
    enc = create_encoder("effnet-lite0")
    src, prep = args.work / "enc-fp32-raw.onnx", args.work / "enc-fp32.onnx"
    if not prep.exists():
        onnx.save(export_encoder(enc, opset=18)[0], src)
        quant_pre_process(src, prep, skip_symbolic_shape=False)
    fp32 = onnx.load(prep)
    pre_rgb = build_preprocess_model(enc.spec, "RGB", opset=18)

    files, labels, val = split_train(args.data / "TRAIN")
    classes = sorted(set(labels))
    y = np.array([classes.index(lab) for lab in labels])
    fit_idx, val_idx = np.flatnonzero(~val), np.flatnonzero(val)
    doc["split"] = {"fit": len(fit_idx), "val": len(val_idx)}
    pool_at = [int(i) for i in np.random.default_rng(SEED).permutation(len(fit_idx))[:POOL]]  # a seeded shuffle of FIT
    fit_e32, pool = embed_files(pre_rgb, fp32, [files[i] for i in fit_idx], pool_at, "FIT photos")
    val_pixels = pixels_of(pre_rgb, [files[i] for i in val_idx], "VAL photos")
    val_e32 = embed(fp32, val_pixels)
    fit_labels, val_labels = [labels[i] for i in fit_idx], [labels[i] for i in val_idx]
    test = discover(args.data).split("test")
    test_pixels = pixels_of(pre_rgb, [s.path for s in test], "TEST photos")
    study = Study(args.work, fp32, build_preprocess_model(enc.spec, "BGR", opset=18), pool,
                  Split(val_pixels, y[val_idx], val_e32, fit_head(fit_e32, fit_labels)),
                  Split(test_pixels, np.array([classes.index(s.label) for s in test]), embed(fp32, test_pixels),
                        fit_head(np.concatenate([fit_e32, val_e32]), fit_labels + val_labels)))
    doc["test_photos"] = len(test)

    rows: dict[str, dict[str, Any]] = {}
    encoders: dict[str, Any] = {}
    for lever in levers():
        t0 = time.perf_counter()
        try:
            q = quantize(study, lever)
            if lever.simulate is not None:
                q = lever.simulate(q, study)
            optimise = lever.simulate is None
            rows[lever.name] = {"what": lever.what, "deployable": optimise,
                                "val": compare(study.val.e32, embed(q, study.val.pixels, optimise), study.val.head, study.val.y),
                                "test": compare(study.test.e32, embed(q, study.test.pixels, optimise), study.test.head, study.test.y)}
            if optimise:
                encoders[lever.name] = q
        except Exception as e:  # one lever failing must not lose the others; the table says which and why
            rows[lever.name] = {"what": lever.what, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        rows[lever.name]["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"{lever.name}: {rows[lever.name]}", flush=True)

    frame = _frame(files[val_idx[0]])
    paths = {"fp32": fused(study, fp32, study.test.head, args.work / "fused-fp32.onnx")}
    paths |= {k: fused(study, e, study.test.head, args.work / f"fused-{k}.onnx") for k, e in encoders.items()}
    doc["load_latency_start"] = load_average()
    lat = latency(paths, frame, args.rounds)
    doc["load_latency_end"] = load_average()
    for k, v in lat.items():
        if k in rows:
            rows[k] |= v | {"speed_vs_today": v["speed_vs_fp32"] / lat[TODAY]["speed_vs_fp32"]}
    doc["fp32_latency"] = lat["fp32"]
    doc["levers"] = rows
    if not args.no_sensitivity and TODAY in encoders:
        doc["sensitivity"] = sensitivity(study, encoders[TODAY])
    if not args.no_qat:
        try:
            doc["qat"] = qat_step_seconds(study)
        except Exception as e:  # the table still says why QAT has no row
            doc["qat"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        print(f"QAT: {doc['qat']}", flush=True)
    doc["load_end"] = load_average()
    doc["seconds"] = round(time.perf_counter() - t_start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    args.out.with_suffix(".md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


def _frame(path: Path) -> np.ndarray:
    """A real photo as a 640x480 BGR camera frame."""
    from PIL import Image

    from waste_edge.data.decode import load_rgb_array

    return np.ascontiguousarray(np.asarray(Image.fromarray(load_rgb_array(path)).resize((640, 480), Image.BILINEAR))[None, ..., ::-1])


def markdown(doc: dict[str, Any]) -> str:
    cpu, fp = doc["cpu"], doc["fp32_latency"]
    lines = [f"CPU: {cpu['model']} ({', '.join(cpu['isa'])}; u8 x s8 GEMM: {cpu['int8_gemm']}); onnxruntime {doc['onnxruntime']}; "
             f"load average {doc['load_start']} at start, {doc['load_latency_start']} -> {doc['load_latency_end']} around the latency rounds, "
             f"{doc['load_end']} at end; {doc['seconds']} s.",
             f"VAL: {doc['split']['val']} TRAIN photos (head fitted on the other {doc['split']['fit']}, FIT; calibration from FIT). "
             f"TEST: {doc['test_photos']} photos, head fitted on all of TRAIN. fp32 export: {fp['batch1_ms']:.2f} ms at batch 1 in the same rounds.",
             "", "| lever | what | VAL agreement | VAL acc fp32 -> int8 | TEST agreement | TEST acc fp32 -> int8 | TEST cos min | TEST cos mean "
             "| TEST max \\|dp\\| | batch-1 ms | vs fp32 | vs today |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in doc["levers"].items():
        if "error" in r:
            lines.append(f"| {name} | {r['what']} | failed: {r['error']} |" + " |" * 9)
            continue
        v, t = r["val"], r["test"]
        speed = (f"{r['batch1_ms']:.2f} | {r['speed_vs_fp32']:.2f}x | {r['speed_vs_today']:.2f}x" if "batch1_ms" in r else "simulated | | ")
        lines.append(f"| {name} | {r['what']} | {100 * v['agreement']:.2f} % ({v['disagree']}) | {100 * v['acc_fp32']:.2f} -> {100 * v['acc_int8']:.2f} "
                     f"| {100 * t['agreement']:.2f} % ({t['disagree']}) | {100 * t['acc_fp32']:.2f} -> {100 * t['acc_int8']:.2f} "
                     f"| {t['cos_min']:.3f} | {t['cos_mean']:.4f} | {t['max_dp']:.3f} | {speed} |")
    lines.append("\n(n) after an agreement: photos whose INT8 label differs from the fp32 export's.")
    qat = doc.get("qat")
    if qat and "error" in qat:
        lines += ["", f"QAT: not measured; timing one step failed: {qat['error']}"]
    elif qat:
        lines += ["", f"QAT (benchmarks/int8_qat.py, fake-quant 7-bit weights, distilled to the fp32 embeddings): not measured to the end. "
                  f"A training step of 16 photos took {qat['seconds_per_step_of_16']} s (mean of {qat['steps']}; "
                  f"{qat['seconds_all']} s with setup): about {qat['minutes_per_epoch_of_pool']} min "
                  f"per epoch of {qat['pool']} photos on this CPU, so the few epochs it needs do not fit this table's ~20 minutes."]
    if doc.get("sensitivity"):
        lines += ["", f"Per-layer sensitivity (one thing quantised alone in the fp32 graph; {SENSITIVITY_IMAGES} VAL photos; the 12 that lose most):", "",
                  "| quantised alone | cos mean with fp32 |", "|---|---|"]
        lines += [f"| {r['what']} | {r['cos_mean']:.5f} |" for r in doc["sensitivity"][:12]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
