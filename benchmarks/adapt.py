"""Learn at the bin, measured (issue 16): does refitting the head on a few labels fix a shifted domain without
forgetting the old one, how long does `adapt` take, and what does the `embedding` output cost?

Protocol, on ../shared/data/waste-sample (its labels.csv has a `source` column):
1. a Lite0 head trained on the Kaggle-source photos of TRAIN only (`train linear`), exported fused with
   `--with-embedding` as fp32 and INT8 (static QDQ calibrated on those same Kaggle TRAIN photos), with a
   rehearsal set (128 embeddings per class of that run's TRAIN photos) beside each model;
2. the old domain = the Kaggle photos of TEST, the shifted domain = the web + TrashNet photos of TEST;
3. labelled frames = k random web + TrashNet photos of TRAIN (k = 10, 20, 50; several seeds), refit with each
   method (`waste_edge.adapt.fit`), accuracy on both domains (mean and spread over seeds) and fit time;
   features come from each model's own `embedding` output (ONNX Runtime), as `waste-edge adapt` does;
4. a check that the real `adapt()` (collection folder -> new .onnx) gives, through the runtime, the accuracies
   of step 3 for k = 50, seed 0;
5. `adapt()` wall time for 500 labelled 640x480 JPEG frames (embeddings + fit + write), per variant;
6. the cost of carrying the `embedding` output: the same graph without it, with it but not fetched, and
   fetched, interleaved (A B C A B C ...) at batch 1 on a 640x480 frame; medians of rounds.
`--select` runs instead the validation protocol that chose the defaults (TRAIN only; TEST not looked at).

    .venv/bin/python benchmarks/adapt.py                      # ~10 min on 2 idle cores (first run: exports)
    .venv/bin/python benchmarks/adapt.py --select             # the method / settings selection on TRAIN

Writes benchmarks/results/adapt-lite0-cpu.{json,md} (or --json / --md) and keeps its scratch (run, models,
embeddings) in build/adapt-bench, reused by the next run when nothing changed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METHODS = ("rehearsal+prior", "rehearsal", "prior", "labels-only")
DEFAULT = "rehearsal+prior"


# -- data ------------------------------------------------------------------------------------------------


def read_sample(data: Path) -> list[dict]:
    """Rows of waste-sample's labels.csv with `split` (train/test) and `domain` (kaggle / shifted)."""
    with open(data / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for r in rows:
        out.append({"path": data / r["path"], "label": r["label"], "split": r["path"].split("/")[0].lower(),
                    "source": r["source"], "domain": "kaggle" if r["source"].startswith("kaggle") else "shifted"})
    return out


def kaggle_manifest(rows: list[dict], work: Path) -> Path:
    path = work / "kaggle-only.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split"])
        for r in rows:
            if r["domain"] == "kaggle":
                w.writerow([str(r["path"]), r["label"], r["split"]])
    return path


def calib_folder(rows: list[dict], work: Path) -> Path:
    """Links to the Kaggle TRAIN photos: INT8 calibration sees only the old domain."""
    folder = work / "calib-kaggle-train"
    folder.mkdir(parents=True, exist_ok=True)
    for r in rows:
        if r["domain"] == "kaggle" and r["split"] == "train":
            link = folder / r["path"].name
            if not link.exists():
                link.symlink_to(r["path"])
    return folder


# -- models ----------------------------------------------------------------------------------------------


def build_models(rows: list[dict], work: Path, variants: list[str], log) -> tuple[Path, dict[str, Path]]:
    """The Kaggle-only run and its fused models with an `embedding` output; `export` writes each model's
    rehearsal set (128 of the run's TRAIN embeddings per class) beside it, as for the default model."""
    import onnx

    from waste_edge.adapt.graph import read_metadata
    from waste_edge.export.exporter import export
    from waste_edge.export.rehearsal import write_rehearsal_for_run
    from waste_edge.runtime.rehearsal import DEFAULT_PER_CLASS, rehearsal_path
    from waste_edge.train.pipeline import TrainConfig, train_linear
    from waste_edge.train.runs import open_run

    run_dir = work / "run-kaggle"
    if not (run_dir / "head.json").is_file():
        train_linear(TrainConfig(data=kaggle_manifest(rows, work), encoder="effnet-lite0", out=run_dir, threads=2), log=log)
    run = open_run(run_dir)
    models = {}
    for variant in variants:
        out = work / f"kaggle-{variant}.onnx"
        fresh = out.is_file() and read_metadata(onnx.load(out)).head_sha256 == run.head.sha256()
        if not fresh:
            opts = {"int8": True, "calib": calib_folder(rows, work)} if variant == "int8" else {}
            export(run_dir, "onnx", out=out, dynamic=True, with_embedding=True, progress=False, log=log, **opts)
        elif not rehearsal_path(out).is_file():
            write_rehearsal_for_run(run_dir, out, per_class=DEFAULT_PER_CLASS, log=log)
        models[variant] = out
    return run_dir, models


def model_features(model: Path, rows: list[dict], work: Path) -> np.ndarray:
    """The model's own `embedding` output for every row (cached per model sha256)."""
    from waste_edge._io import file_sha256
    from waste_edge.runtime.embed import model_embeddings
    from waste_edge.runtime.classifier import Classifier

    cache = work / f"features-{file_sha256(model)[:16]}.npy"
    if cache.is_file():
        return np.load(cache, allow_pickle=False)
    with Classifier(model, "cpu", threads=2) as clf:
        feats, ok, problems = model_embeddings(clf, [r["path"] for r in rows], batch_size=16, progress=sys.stderr.isatty())
    if problems or len(ok) != len(rows):
        raise SystemExit(f"{model.name}: {len(problems)} images could not be decoded: {problems[:3]}")
    np.save(cache, feats)
    return feats


# -- the experiment --------------------------------------------------------------------------------------


def masks(rows: list[dict]) -> dict[str, np.ndarray]:
    split = np.array([r["split"] for r in rows])
    dom = np.array([r["domain"] for r in rows])
    return {
        "old_test": (dom == "kaggle") & (split == "test"),
        "shifted_test": (dom == "shifted") & (split == "test"),
        "pool": (dom == "shifted") & (split == "train"),
        "kaggle_train": (dom == "kaggle") & (split == "train"),
    }


def accuracy(head, x: np.ndarray, y: np.ndarray) -> float:
    return float((head.logits(x).argmax(1) == y).mean() * 100)


def sweep(old, classes, x, y, rehearsal, m, ks, seeds, methods) -> dict:
    """Accuracy on both domains per method and k over seeds (embedding level: the graph computes the same Gemm)."""
    from waste_edge.adapt.fit import FitConfig, fit_head

    pool = np.flatnonzero(m["pool"])
    base = {"shifted": accuracy(old, x[m["shifted_test"]], y[m["shifted_test"]]), "old": accuracy(old, x[m["old_test"]], y[m["old_test"]])}
    table = {}
    for method in methods:
        for k in ks:
            sh, od, secs = [], [], []
            for seed in range(seeds):
                pick = np.random.default_rng(seed).choice(pool, k, replace=False)
                rs = rehearsal if "rehearsal" in method else None
                try:
                    r = fit_head(old, classes, x[pick], y[pick], rs, FitConfig(method=method))
                except Exception as e:  # labels-only with one class in a tiny sample: record, go on
                    sh.append(float("nan")), od.append(float("nan")), secs.append(float("nan"))
                    print(f"  {method} k={k} seed={seed}: {e}", file=sys.stderr)
                    continue
                sh.append(accuracy(r.head, x[m["shifted_test"]], y[m["shifted_test"]]))
                od.append(accuracy(r.head, x[m["old_test"]], y[m["old_test"]]))
                secs.append(r.seconds)
            table[f"{method}|{k}"] = {
                "method": method, "k": k, "seeds": seeds,
                "shifted_mean": float(np.nanmean(sh)), "shifted_std": float(np.nanstd(sh)), "shifted_delta": float(np.nanmean(sh) - base["shifted"]),
                "old_mean": float(np.nanmean(od)), "old_std": float(np.nanstd(od)), "old_delta": float(np.nanmean(od) - base["old"]),
                "fit_seconds_mean": float(np.nanmean(secs)), "per_seed": {"shifted": sh, "old": od},
            }
    return {"base": base, "rows": table, "n_shifted_test": int(m["shifted_test"].sum()), "n_old_test": int(m["old_test"].sum()), "n_pool": int(len(pool))}


def collection_from(paths: list[Path], labels: list[str], folder: Path) -> Path:
    from waste_edge.runtime.collection import write_labels

    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for i, p in enumerate(paths):
        link = folder / f"{i:04d}{p.suffix.lower()}"
        if not link.exists():
            link.symlink_to(p)
        names[link.name] = labels[i]
    write_labels(folder, names)
    return folder


def check_real_adapt(model: Path, rows: list[dict], m, work: Path, expected: dict) -> dict:
    """adapt() on a collection folder for k = 50, seed 0, then the written model through the runtime on TEST."""
    from waste_edge.adapt.adapter import adapt
    from waste_edge.data.decode import load_rgb_array
    from waste_edge.runtime.classifier import Classifier

    pool = np.flatnonzero(m["pool"])
    pick = np.random.default_rng(0).choice(pool, 50, replace=False)
    folder = collection_from([rows[i]["path"] for i in pick], [rows[i]["label"] for i in pick], work / f"collection-50-{model.stem}")
    res = adapt(model, folder, work / f"{model.stem}-adapted-k50.onnx")
    out = {}
    with Classifier(res.out, "cpu", threads=2) as clf:
        for name in ("shifted_test", "old_test"):
            idx = np.flatnonzero(m[name])
            hits = sum(clf.predict(load_rgb_array(rows[i]["path"]), "RGB").label == rows[i]["label"] for i in idx)
            out[name] = 100.0 * hits / len(idx)
    return {"model": res.out.name, "sha256": res.sha256, "runtime_accuracy": out,
            "embedding_level_accuracy": {"shifted_test": expected["shifted"][0], "old_test": expected["old"][0]},
            "method": res.fit.method, "counts": res.fit.counts}


def camera_frames(rows: list[dict], n: int, work: Path) -> tuple[list[Path], list[str]]:
    """n labelled 640x480 JPEG frames (photos letterboxed onto a grey 640x480 canvas, quality 92, as collected)."""
    import cv2

    from waste_edge.data.decode import load_rgb_array

    folder = work / "frames-640x480"
    folder.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(7).permutation(len(rows))[:n]
    paths, labels = [], []
    for j, i in enumerate(order):
        out = folder / f"frame-{j:04d}.jpg"
        if not out.is_file():
            rgb = load_rgb_array(rows[i]["path"])
            h, w = rgb.shape[:2]
            s = min(640 / w, 480 / h)
            small = cv2.resize(rgb, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
            canvas = np.full((480, 640, 3), 118, np.uint8)
            y0, x0 = (480 - small.shape[0]) // 2, (640 - small.shape[1]) // 2
            canvas[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
            cv2.imwrite(str(out), canvas[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
        paths.append(out)
        labels.append(rows[i]["label"])
    return paths, labels


def time_adapt_500(model: Path, rows: list[dict], work: Path, repeats: int) -> dict:
    from waste_edge.adapt.adapter import adapt

    paths, labels = camera_frames(rows, 500, work)
    folder = collection_from(paths, labels, work / "collection-500")
    runs = []
    for _ in range(repeats):
        load = os.getloadavg()[0]
        cpu0 = time.process_time()  # every thread of this process: the work itself, whatever else the machine runs
        res = adapt(model, folder, work / f"{model.stem}-adapted-500.onnx", threads=2)
        cpu = time.process_time() - cpu0
        runs.append({**res.seconds, "cpu_s": round(cpu, 2), "loadavg_1min_before": round(load, 2), "n": sum(res.fit.counts.values())})
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"frames": "500 x 640x480 JPEG", "runs": runs, "total_median_s": statistics.median(r["total"] for r in runs),
            "cpu_median_s": statistics.median(r["cpu_s"] for r in runs), "cores": cores}


def embedding_overhead(model: Path, work: Path, rounds: int, iters: int) -> dict:
    """Median ms per frame: A = graph without the `embedding` output, B = with it (not fetched), C = fetched."""
    import onnx

    from waste_edge.runtime.classifier import Classifier

    proto = onnx.load(model)
    plain_proto = onnx.ModelProto()
    plain_proto.CopyFrom(proto)
    keep = [o for o in plain_proto.graph.output if o.name != "embedding"]
    del plain_proto.graph.output[:]
    plain_proto.graph.output.extend(keep)
    plain = work / f"{model.stem}-no-embedding.onnx"
    onnx.save(plain_proto, plain)
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    with Classifier(plain, "cpu", threads=2) as a, Classifier(model, "cpu", threads=2) as b:
        calls = {"A_without_output": lambda: a.predict_proba(frame), "B_output_not_fetched": lambda: b.predict_proba(frame),
                 "C_output_fetched": lambda: b.predict_proba(frame, with_embedding=True)}
        for f in calls.values():
            for _ in range(5):
                f()
        per: dict[str, list[float]] = {k: [] for k in calls}
        cpu: dict[str, list[float]] = {k: [] for k in calls}
        for _ in range(rounds):
            for k, f in calls.items():
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(iters):
                    f()
                per[k].append((time.perf_counter() - t0) * 1e3 / iters)
                cpu[k].append((time.process_time() - c0) * 1e3 / iters)

    def ratios(d: dict[str, list[float]], name: str) -> float:
        return statistics.median(x / a for a, x in zip(d["A_without_output"], d[name]))

    return {"ms_median": {k: statistics.median(v) for k, v in per.items()}, "cpu_ms_median": {k: statistics.median(v) for k, v in cpu.items()},
            "ratio_B_over_A_median": ratios(per, "B_output_not_fetched"), "ratio_C_over_A_median": ratios(per, "C_output_fetched"),
            "cpu_ratio_B_over_A_median": ratios(cpu, "B_output_not_fetched"), "cpu_ratio_C_over_A_median": ratios(cpu, "C_output_fetched"),
            "rounds": rounds, "iters": iters, "frame": "640x480", "batch": 1, "threads": 2, "per_round_ms": per, "per_round_cpu_ms": cpu,
            "loadavg_after": load_average_now()}


def load_average_now() -> list[float] | None:
    from waste_edge.bench.machine import load_average

    return load_average()


# -- selection (TRAIN only) ------------------------------------------------------------------------------


def select(x: np.ndarray, y: np.ndarray, m, seeds: int, ks: list[int]) -> list[dict]:
    """The validation protocol behind the defaults: never touches TEST."""
    from sklearn.linear_model import LogisticRegression

    from waste_edge.adapt.fit import FitConfig, fit_head
    from waste_edge.adapt.graph import HeadConstants
    from waste_edge.runtime.rehearsal import RehearsalSet, select_rehearsal

    rng = np.random.default_rng(123)
    kt = rng.permutation(np.flatnonzero(m["kaggle_train"]))
    fit_i, old_i = kt[: int(0.8 * len(kt))], kt[int(0.8 * len(kt)) :]
    sp = rng.permutation(np.flatnonzero(m["pool"]))
    pool, sh_i = sp[: len(sp) // 2], sp[len(sp) // 2 :]
    base = LogisticRegression(C=0.316, max_iter=1000).fit(x[fit_i], y[fit_i])
    d = x.shape[1]
    old = HeadConstants(np.stack([np.zeros(d), base.coef_[0]], 1).astype(np.float32), np.array([0.0, base.intercept_[0]], np.float32))
    b_sh, b_old = accuracy(old, x[sh_i], y[sh_i]), accuracy(old, x[old_i], y[old_i])
    grid = [("labels-only", 0, None, True), ("rehearsal", 128, None, True)]
    grid += [("prior", 0, s, p) for s in (1.0, 10.0, 100.0) for p in (False, True)]
    grid += [("rehearsal+prior", r, s, p) for r in (64, 128, 256) for s in (1.0, 10.0) for p in (False, True)]
    out = []
    for method, per_class, scale, pen in grid:
        for k in ks:
            sh, od = [], []
            for seed in range(seeds):
                pick = np.random.default_rng(seed).choice(pool, k, replace=False)
                rs = None
                if per_class:
                    idx = select_rehearsal(y[fit_i], per_class, seed)
                    rs = RehearsalSet(x[fit_i][idx], y[fit_i][idx], ["B", "N"], "e", "none")
                try:
                    r = fit_head(old, ["B", "N"], x[pick], y[pick], rs, FitConfig(method=method, prior_scale=scale, penalise_intercept=pen))
                except Exception:
                    continue
                sh.append(accuracy(r.head, x[sh_i], y[sh_i]) - b_sh)
                od.append(accuracy(r.head, x[old_i], y[old_i]) - b_old)
            row = {"method": method, "rehearsal_per_class": per_class, "prior_scale": scale, "penalise_intercept": pen, "k": k,
                   "shifted_delta": float(np.mean(sh)), "old_delta": float(np.mean(od)), "seeds": len(sh)}
            out.append(row)
            print(f"{method:16s} R={per_class:3d} S={scale} penb={pen!s:5s} k={k:3d}  shifted {row['shifted_delta']:+.2f}  old {row['old_delta']:+.2f}", flush=True)
    print(f"validation base: shifted {b_sh:.2f} ({len(sh_i)} photos), old {b_old:.2f} ({len(old_i)} photos); labels from {len(pool)} photos")
    return out


# -- report ----------------------------------------------------------------------------------------------


def markdown(rec: dict) -> str:
    lines = ["## Adapt at the bin: Lite0 head trained on Kaggle-source photos only, refitted on web / TrashNet labels", ""]
    mi = rec["machine"]
    lines += [f"- CPU: {mi['cpu']}, {mi['usable_cores']} usable cores, flags {', '.join(mi.get('cpu_flags', []))}; load average at start "
              f"{mi['load_average_start']}, at end {rec['load_average_end']}", f"- command: `{rec['command'].strip()}`; {rec['seeds']} seeds per k"]
    first = next((v["sweep"] for v in rec["variants"].values() if "sweep" in v), None)
    if first:
        lines.append(f"- old domain = {first['n_old_test']} Kaggle TEST photos, shifted domain = {first['n_shifted_test']} web + TrashNet TEST photos, "
                     f"labels drawn from {first['n_pool']} web + TrashNet TRAIN photos")
    lines.append("")
    for variant, v in rec["variants"].items():
        s = v.get("sweep") or {"base": {"shifted": float("nan"), "old": float("nan")}, "rows": {}}
        lines += [f"### {variant} ({v['model']}): base head shifted {s['base']['shifted']:.2f} %, old {s['base']['old']:.2f} %", ""]
        if s["rows"]:
            lines += ["| method | k | shifted domain % (mean ± sd) | Δ shifted | old domain % (mean ± sd) | Δ old | fit s |", "|---|---|---|---|---|---|---|"]
        for row in s["rows"].values():
            mark = "**" if row["method"] == DEFAULT else ""
            lines.append(f"| {mark}{row['method']}{mark} | {row['k']} | {row['shifted_mean']:.2f} ± {row['shifted_std']:.2f} | {row['shifted_delta']:+.2f} | "
                         f"{row['old_mean']:.2f} ± {row['old_std']:.2f} | {row['old_delta']:+.2f} | {row['fit_seconds_mean']:.2f} |")
        c = v.get("real_adapt_check")
        if c:
            lines += ["", f"Real `adapt()` (k = 50, seed 0) -> {c['model']}, through the runtime: shifted {c['runtime_accuracy']['shifted_test']:.2f} %, "
                      f"old {c['runtime_accuracy']['old_test']:.2f} % (embedding-level: {c['embedding_level_accuracy']['shifted_test']:.2f} / {c['embedding_level_accuracy']['old_test']:.2f})."]
        t = v.get("adapt_500")
        if t:
            runs = "; ".join(f"wall {r['total']:.2f} s (model load {r['load']:.2f}, embeddings {r['embed']:.2f}, fit {r['fit']:.2f}, write {r['write']:.2f}), "
                             f"CPU {r['cpu_s']:.2f} s, loadavg {r['loadavg_1min_before']}" for r in t["runs"])
            lines += ["", f"`adapt` on 500 labelled 640x480 JPEG frames: median wall {t['total_median_s']:.2f} s, median CPU time {t['cpu_median_s']:.2f} s "
                      f"(CPU / {t['cores']} cores = {t['cpu_median_s'] / t['cores']:.2f} s, the wall time on idle cores if both stay busy). Runs: {runs}."]
        o = v.get("embedding_overhead")
        if o:
            ms, cp = o["ms_median"], o["cpu_ms_median"]
            lines += ["", f"`embedding` output, batch 1, 640x480, {o['rounds']} interleaved rounds x {o['iters']} calls (wall ms / CPU ms per frame): "
                      f"without the output {ms['A_without_output']:.2f} / {cp['A_without_output']:.2f}; carried, not fetched {ms['B_output_not_fetched']:.2f} / "
                      f"{cp['B_output_not_fetched']:.2f} (ratio to without: {o['ratio_B_over_A_median']:.3f} / {o['cpu_ratio_B_over_A_median']:.3f}); "
                      f"fetched {ms['C_output_fetched']:.2f} / {cp['C_output_fetched']:.2f} (ratio {o['ratio_C_over_A_median']:.3f} / {o['cpu_ratio_C_over_A_median']:.3f})."]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "waste-sample")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "adapt-bench")
    ap.add_argument("--variants", default="fp32,int8")
    ap.add_argument("--ks", default="10,20,50")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--repeats", type=int, default=2, help="timed adapt() runs on 500 frames per variant")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the embedding-output timing")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--select", action="store_true", help="run the TRAIN-only selection protocol instead (fp32 features)")
    ap.add_argument("--only", choices=["accuracy", "timing"], default=None, help="skip the timing parts, or the accuracy sweep")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "adapt-lite0-cpu.json")
    ap.add_argument("--md", type=Path, default=REPO / "benchmarks" / "results" / "adapt-lite0-cpu.md")
    args = ap.parse_args(argv)
    if not (args.data / "labels.csv").is_file():
        print(f"error: {args.data}/labels.csv not found (waste-sample with its source column is needed)", file=sys.stderr)
        return 1

    from waste_edge._io import write_json
    from waste_edge.bench.machine import load_average, machine_info
    from waste_edge.runtime.rehearsal import load_rehearsal, rehearsal_path

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    machine = machine_info()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = read_sample(args.data)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    ks = [int(k) for k in args.ks.split(",")]
    run_dir, models = build_models(rows, args.work, ["fp32"] if args.select else variants, log)
    classes = ["B", "N"]
    y = np.array([classes.index(r["label"]) for r in rows])
    m = masks(rows)
    if args.select:
        x = model_features(models["fp32"], rows, args.work)
        table = select(x, y, m, args.seeds, ks)
        write_json(args.json.with_name(args.json.stem + "-select.json"), {"machine": machine, "rows": table})
        return 0
    record = {"command": "python benchmarks/adapt.py " + " ".join(argv if argv is not None else sys.argv[1:]), "machine": machine,
              "seeds": args.seeds, "ks": ks, "run": os.path.relpath(os.path.abspath(run_dir), REPO), "variants": {}}
    from waste_edge.adapt.graph import find_head, load_model

    if args.only and args.json.is_file():  # a partial run updates the recorded one
        old_record = json.loads(args.json.read_text())
        record["variants"] = old_record.get("variants", {})
        record["command"] = old_record.get("command", record["command"]) + f"; then {record['command']}"
    for variant in variants:
        model = models[variant]
        v = record["variants"].setdefault(variant, {})
        v["model"] = model.name
        if args.only != "timing":
            log(f"{variant}: embeddings of {len(rows)} photos through {model.name}")
            x = model_features(model, rows, args.work)
            old = find_head(load_model(model)).constants
            rs = load_rehearsal(rehearsal_path(model))
            sw = sweep(old, classes, x, y, rs, m, ks, args.seeds, [s for s in args.methods.split(",") if s])
            v["sweep"] = sw
            key = f"{DEFAULT}|50"
            if key in sw["rows"]:
                v["real_adapt_check"] = check_real_adapt(model, rows, m, args.work, sw["rows"][key]["per_seed"])
        if args.only != "accuracy":
            log(f"{variant}: adapt() on 500 frames")
            v["adapt_500"] = time_adapt_500(model, rows, args.work, args.repeats)
            log(f"{variant}: embedding-output overhead")
            v["embedding_overhead"] = embedding_overhead(model, args.work, args.rounds, args.iters)
        print(markdown({**record, "load_average_end": load_average(), "variants": {variant: v}}), flush=True)
    record["load_average_end"] = load_average()
    write_json(args.json, record)
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text(markdown(record))
    print(f"wrote {args.json} and {args.md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
