"""Reproduce the recorded benchmark tables in benchmarks/README.md.

    .venv/bin/python benchmarks/run.py            # CPU tables (and GPU tables when a CUDA GPU is present)
    .venv/bin/python benchmarks/run.py --quick    # fewer rounds / iterations, for a smoke check

What it does, every step through the public CLI so the tables come from the commands a user runs:

1. ViT-B/32 with random weights (speed does not depend on the weights): a run directory whose head is fitted
   on random features (`fit_head` + `make_card` / `save_run`, no images needed), exported as fused ONNX fp32
   and INT8 with a dynamic batch.
2. The Lite0 model: `train linear --encoder effnet-lite0` on ../shared/data/waste-sample when it is there
   (else a head on random features over the real ImageNet encoder), exported fp32; the INT8 row is the
   embedded default model waste_edge/models/default.onnx (built from the same data with the same head, so
   the bench pairs it with this run's reference), or, without it, this run exported INT8 (static QDQ,
   calibrated on the TRAIN images).
3. `waste-edge bench` for each, with the study's reference pipeline of the same run, interleaved rounds,
   the camera-loop overhead for Lite0, an ONNX Runtime op profile, writing results/<name>-cpu.{json,md,png}.
4. Only when ONNX Runtime offers CUDAExecutionProvider: fp16 exports and the cuda / tensorrt backends at
   batch 1, 16 and 256, writing results/<name>-gpu.*. GPU rows are never written from a CPU-only machine.

Intermediate files (runs, exported models) go to --work (default benchmarks/.cache/, git-ignored); the
embedding cache makes a second Lite0 training instant.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WASTE_SAMPLE = REPO.parent / "shared" / "data" / "waste-sample"
RESULTS = HERE / "results"


def cli(*args: str, check: bool = True) -> int:
    """`waste-edge ARGS` in a fresh interpreter (OpenMP settings must be in place before torch loads)."""
    cmd = [sys.executable, "-m", "waste_edge.cli", *args]
    print("+ waste-edge " + " ".join(args), flush=True)
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    code = subprocess.run(cmd, cwd=REPO, env=env).returncode
    if check and code != 0:
        sys.exit(f"command failed ({code}): waste-edge {' '.join(args)}")
    return code


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


def export(run: Path, name: str, *extra: str) -> Path:
    out = run / name
    if out.is_file() and out.stat().st_mtime > (run / "head.json").stat().st_mtime:
        return out
    cli("export", str(run), "--format", "onnx", "--dynamic", "--out", str(out), "--quiet", *extra)
    return out


def gpu_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def bench(name: str, title: str, models: list[Path], reference: Path, backends: str, batches: str, args: argparse.Namespace, *extra: str) -> None:
    if args.prepare_only:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    cmd = ["bench", "--backends", backends, "--batch", batches, "--frame", "640x480", "--reference", str(reference),
           "--warmup", "3", "--rounds", str(args.rounds), "--iters", str(args.iters), "--threads", str(args.threads),
           "--title", title, "--json", str(RESULTS / f"{name}.json"), "--md", str(RESULTS / f"{name}.md"),
           "--plot", str(RESULTS / f"{name}.png"), *extra]
    for m in models:
        cmd += ["--model", str(m)]
    cli(*cmd)


BEGIN, END = "<!-- results:begin (written by benchmarks/run.py) -->", "<!-- results:end -->"
ORDER = ("vitb32-cpu", "lite0-cpu", "vitb32-gpu", "lite0-gpu")


def update_readme() -> None:
    """Copy the recorded tables (results/*.md) and plots into README.md between the markers; prose stays."""
    readme = HERE / "README.md"
    parts = []
    for name in ORDER:
        md, png = RESULTS / f"{name}.md", RESULTS / f"{name}.png"
        if md.is_file():
            parts.append(md.read_text().replace("## ", "### ", 1).rstrip())
            if png.is_file():
                parts.append(f"![latency and throughput vs batch: {name}](results/{name}.png)")
    block = BEGIN + "\n\n" + "\n\n".join(parts) + "\n\n" + END
    text = readme.read_text() if readme.is_file() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + "\n\n" + BEGIN + "\n" + END + "\n"
    head, rest = text.split(BEGIN, 1)
    text = head + block + rest.split(END, 1)[1]
    readme.write_text(text)
    print(f"updated {readme}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=HERE / ".cache", help="runs and exported models (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: %(default)s)")
    ap.add_argument("--iters", type=int, default=10, help="timed calls per target per round (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    ap.add_argument("--only", choices=["vit", "lite0"], default=None, help="run one of the two suites")
    ap.add_argument("--quick", action="store_true", help="2 rounds of 3 calls: a smoke check, not a record")
    ap.add_argument("--prepare-only", action="store_true", help="train and export, do not benchmark")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.iters = 2, 3
    sys.path.insert(0, str(REPO))
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    gpu = gpu_available()
    t0 = time.time()

    if args.only in (None, "vit"):
        vit = random_feature_run("clip:ViT-B-32/none", work / "vitb32-random")
        vit_models = [export(vit, "vitb32-fp32.onnx"), export(vit, "vitb32-int8.onnx", "--int8")]
        bench("vitb32-cpu", "ViT-B/32 (random weights) on CPU", vit_models, vit, "cpu", "1,16", args, "--profile")
        if gpu:
            fp16 = export(vit, "vitb32-fp16.onnx", "--half")
            bench("vitb32-gpu", "ViT-B/32 (random weights) on GPU", [vit_models[0], fp16], vit, "cuda,tensorrt", "1,16,256", args)

    if args.only in (None, "lite0"):
        lite0 = work / "lite0"
        data: list[str] = []
        if WASTE_SAMPLE.is_dir():
            if not (lite0 / "card.json").is_file():
                cli("train", "linear", "--data", str(WASTE_SAMPLE), "--encoder", "effnet-lite0", "--out", str(lite0), "--threads", str(args.threads))
            calib = ["--calib", str(WASTE_SAMPLE / "TRAIN")]
            data = ["--data", str(WASTE_SAMPLE)]
        else:
            print(f"{WASTE_SAMPLE} not found: Lite0 head fitted on random features (speed only)", flush=True)
            random_feature_run("effnet-lite0", lite0)
            calib = []
        lite_models = [export(lite0, "lite0-fp32.onnx")]
        default = REPO / "waste_edge" / "models" / "default.onnx"
        if default.is_file():
            lite_models.append(default)  # the embedded default (Lite0 INT8): paired with this run when its head matches
        elif calib:
            lite_models.append(export(lite0, "lite0-int8.onnx", "--int8", *calib))
        bench("lite0-cpu", "EfficientNet-Lite0 (the default model) on CPU", lite_models, lite0, "cpu", "1,16", args,
              "--camera", "--profile", *data)
        if gpu:
            bench("lite0-gpu", "EfficientNet-Lite0 on GPU", lite_models[:1], lite0, "cuda,tensorrt", "1,16,256", args)

    if not args.prepare_only:
        update_readme()
    print(f"done in {time.time() - t0:.0f} s; tables in {RESULTS}", flush=True)
    if not gpu:
        print("no CUDA GPU here: no GPU rows were measured or written", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
