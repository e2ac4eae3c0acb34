"""The `waste-edge` command line: parses, calls the library, prints. No logic lives here.

Options are declared once, on the fields of the library dataclasses they fill (`_options.option`): the groups
several verbs share (model and backend, source, decision, output, collection, Ray) and each verb's own
settings (`TrainConfig`, `ExportOptions`, `BenchConfig`, `ServeConfig`, ...). This module adds them to the
verbs (`add_options`) and builds the dataclasses back (`options_from`); what is left here is the verbs'
descriptions, examples and the printing. A flag has one meaning on every verb; a retired spelling is a
one-line usage error that names the new one (`_options.renamed`).

Exit codes: 0 success, 1 failure (one-line `error: ...`, no traceback for user mistakes), 2 usage error.
Heavy libraries (torch, open_clip, sklearn, TensorFlow, FastAPI) are imported inside the verbs that need
them, so `--help` and the runtime verbs stay fast and torch-free.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import textwrap
from contextlib import nullcontext
from dataclasses import replace
from typing import Any, Callable, Sequence

from waste_edge import __version__
from waste_edge._options import add_common, add_options, int_in, options_from, renamed
from waste_edge._outputs import input_model, input_path, input_run, input_spec, output_file, output_folder
from waste_edge.runtime.classifier import ModelOptions
from waste_edge.runtime.collector import CollectConfig
from waste_edge.runtime.decision import DecisionOptions
from waste_edge.runtime.hooks import HookOptions
from waste_edge.runtime.sinks import OutputOptions
from waste_edge.runtime.sources import SourceOptions

RAW = argparse.RawDescriptionHelpFormatter


def _doc(cls: type) -> str:
    """The first paragraph of a dataclass's docstring, on one line: the description of the verb it configures."""
    return " ".join((cls.__doc__ or "").split("\n\n")[0].split())


def _log_err(message: str) -> None:
    """A log line on stderr that does not tear an open tqdm bar."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _log_to_stderr() -> None:
    """Reconnects, stalls and skipped frames are logged by the runtime; show them as one-line warnings."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)


def _paragraph(cls: type, n: int) -> str:
    """Paragraph `n` of a class's docstring, as written (an epilog)."""
    return inspect.cleandoc(cls.__doc__ or "").split("\n\n")[n]


def _verb(sub: argparse._SubParsersAction, name: str, help: str, doc: type | str, func: Callable[[argparse.Namespace], int],
          epilog: str = "") -> argparse.ArgumentParser:
    """A verb's parser. `doc`: its description, or the options class that documents the verb (the first paragraph of
    its docstring; its `EPILOG`, the examples and formats, before `epilog`)."""
    if not isinstance(doc, str):
        doc, epilog = _doc(doc), "\n\n".join(filter(None, [getattr(doc, "EPILOG", ""), epilog]))
    p = sub.add_parser(name, help=help, description=doc, epilog=epilog, formatter_class=RAW)
    p.set_defaults(func=func)
    return p


def _retired(p: argparse.ArgumentParser, old: str, new: str, what: str) -> None:
    p.add_argument(old, **renamed(old, new, what))


TORCH_THREADS = ("--torch-threads", "PyTorch intra-op threads")


# -- section: scale (--torch-device / --amp for extraction, --ray for predict and extraction) ----------------------------------------

def _ray_epilog() -> str:
    from waste_edge.scale.cluster import RayOptions

    return textwrap.fill(" ".join(_paragraph(RayOptions, 1).split()), width=100)


def _add_ray_options(p: argparse.ArgumentParser) -> None:
    from waste_edge.scale.cluster import RayOptions

    add_options(p, RayOptions, override={"address": {"default": None}})


def _ray_options(args: argparse.Namespace, threads: int | None) -> Any:
    """`threads` (the model's threads in each actor) reserves at least that many CPUs per actor."""
    from waste_edge.scale.cluster import RayOptions

    opts = options_from(RayOptions, args)
    return replace(opts, cpus_per_worker=max(opts.cpus_per_worker, float(threads or 0)))


def _feature_runner(args: argparse.Namespace) -> Any:
    """What --torch-device / --amp / --ray ask extraction to run on (None: the default); open it with `with`."""
    from waste_edge.scale.extract import feature_runner
    from waste_edge.train.config import TorchOptions

    torch = options_from(TorchOptions, args)
    ray = _ray_options(args, args.torch_threads) if args.ray is not None else None
    return feature_runner(ray, device=torch.device, amp=torch.amp, workers=args.workers, threads=args.torch_threads, log=_log_err)


# -- section: train (train linear / baseline / finetune, eval) ----------------------------------------


def _add_train(sub: argparse._SubParsersAction) -> None:
    from waste_edge.train.config import BaselineConfig, EvalOptions, FinetuneConfig, TorchOptions, TrainConfig
    from waste_edge.train.keras.archs import ARCH_NAMES

    train = sub.add_parser("train", help="train a classifier on a dataset", description="Train a classifier.")
    tsub = train.add_subparsers(dest="train_cmd", metavar="{linear,baseline,finetune}", required=True)
    p = _verb(tsub, "linear", "image encoder embeddings + logistic-regression head (the study's CLIP pipeline)",
              TrainConfig, _cmd_train_linear, _ray_epilog())
    add_options(p, TrainConfig)
    add_options(p, TorchOptions)
    _add_ray_options(p)
    _retired(p, "--threads", *TORCH_THREADS)

    b = _verb(tsub, "baseline", "the study's Keras baselines: small CNN, VGG16, EfficientNetB0, InceptionV3 (needs the [baselines] extra)",
              BaselineConfig, _cmd_train_baseline)
    add_options(b, BaselineConfig, override={"arch": {"choices": ARCH_NAMES}})
    _retired(b, "--threads", "--tf-threads", "TensorFlow intra-op threads")

    f = _verb(tsub, "finetune", "fine-tune EfficientNet-Lite0 on the photos; the run exports like a linear run",
              FinetuneConfig, _cmd_train_finetune)
    add_options(f, FinetuneConfig)
    add_common(f, "--quiet", False, help="no progress bars")
    _retired(f, "--threads", *TORCH_THREADS)

    e = sub.add_parser("eval", help="re-evaluate a trained run on a dataset",
                       description="Evaluate a run directory on any dataset and write metrics.json, report.txt, confusion_matrix.png, roc.png.")
    e.add_argument("run", type=input_run, help="run directory written by `train linear`")
    add_options(e, EvalOptions)
    add_options(e, TorchOptions)
    _add_ray_options(e)
    _retired(e, "--threads", *TORCH_THREADS)
    e.set_defaults(func=_cmd_eval)


def _cmd_train_linear(args: argparse.Namespace) -> int:
    from waste_edge.train.config import TorchOptions
    from waste_edge.train.pipeline import TrainConfig, train_linear

    runner = _feature_runner(args)
    with runner or nullcontext():
        torch = options_from(TorchOptions, args)
        result = train_linear(options_from(TrainConfig, args, device=torch.device, amp=torch.amp, runner=runner), log=print)
    print(result.summary())
    return 0


def _cmd_train_baseline(args: argparse.Namespace) -> int:
    from waste_edge.train.keras.trainer import BaselineConfig, train_baseline

    result = train_baseline(options_from(BaselineConfig, args, progress=sys.stderr.isatty()), log=print)
    print(result.summary())
    return 0


def _cmd_train_finetune(args: argparse.Namespace) -> int:
    from waste_edge.train.finetune.trainer import FinetuneConfig, train_finetune

    result = train_finetune(options_from(FinetuneConfig, args, progress=not args.quiet), log=lambda line: print(line, flush=True))
    print(result.summary())
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from waste_edge.train.config import EvalOptions
    from waste_edge.train.runs import open_run

    o = options_from(EvalOptions, args)
    runner = _feature_runner(args)
    with runner or nullcontext():
        report = open_run(args.run).evaluate(o.data, split=o.split, out=o.out, batch_size=o.batch_size, workers=o.workers,
                                             threads=o.threads, cache_dir=o.cache_dir, log=print, runner=runner)
    print(report.summary())
    return 0


# -- section: runtime (camera, predict) ----------------------------------------


def _add_runtime(sub: argparse._SubParsersAction) -> None:
    from waste_edge.runtime.camera import CameraConfig
    from waste_edge.runtime.predict import PredictOptions

    c = _verb(sub, "camera", "classify live camera frames (or a stream, video, image folder) with a fused model",
              CameraConfig, _cmd_camera)
    add_options(c, SourceOptions, only=["device", "stall_timeout"])
    add_options(c, ModelOptions)
    add_options(c, OutputOptions)
    add_options(c, DecisionOptions)
    add_options(c, CameraConfig)
    add_options(c, CollectConfig)
    add_options(c, HookOptions)

    p = _verb(sub, "predict", "classify images, folders and videos into a CSV or JSONL table",
              PredictOptions, _cmd_predict, _ray_epilog() + "\nThe rows are the same as without --ray, in the same order.")
    p.add_argument("sources", nargs="*", type=input_spec, metavar="SOURCE", help="image, video, folder or glob (one or more)")
    add_options(p, ModelOptions)
    add_options(p, PredictOptions)
    p.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)  # the old spelling of --quiet
    _add_ray_options(p)


def _collect_config(args: argparse.Namespace) -> CollectConfig | None:
    """--collect and its settings as a `CollectConfig`, or None without --collect."""
    return options_from(CollectConfig, args) if args.collect is not None else None


def _cmd_camera(args: argparse.Namespace) -> int:
    from waste_edge.runtime.camera import CameraConfig, run_camera
    from waste_edge.runtime.classifier import Classifier
    from waste_edge.runtime.collector import Collector, adapt_hint
    from waste_edge.runtime.hooks import DecisionHook
    from waste_edge.runtime.sinks import Decisions
    from waste_edge.runtime.sources import open_source

    _log_to_stderr()
    hook_opts = options_from(HookOptions, args)
    hook = DecisionHook(list(hook_opts.argv()), timeout=hook_opts.timeout) if hook_opts.command is not None else None
    out = sys.stderr if args.jsonl is not None and str(args.jsonl) == "-" else sys.stdout  # keep stdout pure JSONL when events go there
    source_opts = options_from(SourceOptions, args)
    with Classifier.open(options_from(ModelOptions, args)) as clf:
        print(f"model: {clf.describe()}", file=out, flush=True)
        with open_source(source_opts.device, stall_timeout=source_opts.stall_timeout) as source:
            print(f"source: {source.name} ({source.kind}{', live' if source.live else ''})", file=out, flush=True)
            config = options_from(CameraConfig, args, output=options_from(OutputOptions, args), decision=options_from(DecisionOptions, args))
            collect = _collect_config(args)
            collector = Collector.for_model(collect, clf.path, clf.classes, source.name) if collect is not None else None
            try:
                summary = run_camera(clf, source, config, collector=collector, sinks=[Decisions(hook, owns=False)] if hook else ())
            finally:
                collect_stats = collector.close() if collector is not None else None
                if hook is not None:
                    hook.close(10.0)
    print(summary.summary(), file=out)
    if hook is not None:
        print(hook.status().summary(), file=out)
    if collect_stats is not None:
        print(f"{collect_stats.format()}\n{adapt_hint(args.collect, args.model)}", file=out)
    if summary.lost:  # the loop ran on, but an output is not whole: say so in the status too
        print(f"error: {len(summary.lost)} output(s) could not be written completely (see 'lost:' above)", file=sys.stderr)
        return 1
    return 0  # Ctrl-C is the normal way to stop a camera: a clean stop, not a failure


def _cmd_predict(args: argparse.Namespace) -> int:
    from waste_edge.runtime.predict import PredictOptions
    from waste_edge.scale.cluster import looks_like_ray_address

    if args.ray is not None and not looks_like_ray_address(args.ray):
        args.sources.insert(0, args.ray)  # `predict --ray photos/`: --ray took the first source as its address
        args.ray = "auto"
    if not args.sources:
        print("error: give at least one SOURCE (image, video, folder or glob)", file=sys.stderr)
        return 2
    _log_to_stderr()
    model, o = options_from(ModelOptions, args), options_from(PredictOptions, args)
    if args.ray is not None:
        from waste_edge.scale.predict import run_predict_ray

        summary = run_predict_ray(model.model, args.sources, o.out, options=_ray_options(args, model.threads), backend=model.backend,
                                  batch_size=o.batch_size, decode_threads=o.workers, progress=not o.quiet, log=_log_err, max_pixels=o.max_pixels)
    else:
        from waste_edge.runtime.classifier import Classifier
        from waste_edge.runtime.predict import run_predict

        with Classifier.open(model) as clf:
            print(f"model: {clf.describe()}", file=sys.stderr)
            summary = run_predict(clf, args.sources, o.out, batch_size=o.batch_size, workers=o.workers, progress=not o.quiet,
                                  max_pixels=o.max_pixels)
    print(summary.summary(), file=sys.stderr if summary.out == "stdout" else sys.stdout)
    if summary.predictions == 0:
        print("error: no input could be classified (see the error column)", file=sys.stderr)
        return 1
    return 0


# -- section: export (export, parity) ----------------------------------------


def _add_export(sub: argparse._SubParsersAction) -> None:
    from waste_edge.export.options import ExportOptions, formats_table
    from waste_edge.runtime.formats import FORMATS

    p = _verb(sub, "export", "fuse preprocessing + encoder + head of a run into one ONNX model or TensorRT engine",
              ExportOptions, _cmd_export, (
        f"formats:\n{formats_table()}\n\n"
        "variants: fp32 (default); --int8: dynamic MatMul quantisation for ViTs, static QDQ calibrated on --calib "
        "images for conv encoders; --half: fp16 weights for GPU providers (normalisation layers stay fp32).\n"
        "examples:\n"
        "  waste-edge export runs/lite0 --format onnx --int8 --calib data/waste-sample/TRAIN\n"
        "  waste-edge export runs/clip --format onnx --imgsz 480 640        # fixed-size graph for 640x480 frames\n"
        "  waste-edge export runs/clip --format engine --half --dynamic --batch 16 --imgsz 720 1280"))
    p.add_argument("run", type=input_run, help="run directory written by `train linear` (card.json + head.json)")
    p.add_argument("--format", default="onnx", type=str.lower, choices=[f.name for f in FORMATS],
                   help="model format, see the table below (default: %(default)s)")
    add_options(p, ExportOptions, unset=True)
    add_common(p, "--quiet", False)

    q = _verb(sub, "parity", "check an exported model against the study's reference pipeline", (
        "Run the reference pipeline (PIL preprocessing, PyTorch encoder, scikit-learn predict_proba) and the exported "
        "model on the same images; report label agreement, max / p99 |dp|, embedding cosine and a per-stage "
        "breakdown of the worst image. Exit 1 when below the variant's tolerance (fp32: 100 %% agreement and "
        "max |dp| <= 1e-3; int8 / fp16: >= 99.5 %% agreement)."), _cmd_parity,
        "example: waste-edge parity runs/lite0/model-int8.onnx --run runs/lite0 --data data/waste-sample/TEST --json parity.json")
    q.add_argument("model", type=input_model, help="exported model (.onnx or .engine)")
    q.add_argument("--run", required=True, type=input_run, help="the run directory it was exported from")
    add_common(q, "--data", required=True, help="folder of images (class sub-folders give accuracies too)")
    add_common(q, "--limit")
    add_common(q, "--json")
    add_options(q, ModelOptions, only=["threads"],
                override={"threads": {"default": 2, "help": "ONNX Runtime intra-op threads of the model (default: %(default)s)"}})
    add_common(q, "--torch-threads", help="PyTorch intra-op threads of the reference (default: half of --threads)")
    add_common(q, "--quiet", False, help="no progress bar")


def _cmd_export(args: argparse.Namespace) -> int:
    from waste_edge._options import declared
    from waste_edge.export.exporter import ExportOptions, export

    opts = {name: getattr(args, spec.dest) for name, spec, _ in declared(ExportOptions)}
    result = export(args.run, args.format, progress=not args.quiet, log=lambda m: print(m, file=sys.stderr), **opts)
    print(result.summary())
    return 0


def _cmd_parity(args: argparse.Namespace) -> int:
    from waste_edge._io import write_json
    from waste_edge.export.parity import run_parity

    report = run_parity(args.model, args.run, args.data, limit=args.limit, threads=args.threads, torch_threads=args.torch_threads,
                        progress=not args.quiet)
    print(report.summary())
    if args.json:
        print(f"report: {write_json(args.json, report.to_json())}")
    return 0 if report.passed else 1


# -- section: bench ----------------------------------------


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from waste_edge.bench.config import BenchConfig

    p = _verb(sub, "bench", "latency / throughput of models x backends x batch sizes, against the study's own pipeline",
              BenchConfig, _cmd_bench)
    add_options(p, BenchConfig, exclude=["iters", "seconds"],
                override={"models": {"help": "a fused model; repeat for several (default: the embedded default model)"}})
    add_options(p.add_mutually_exclusive_group(), BenchConfig, only=["iters", "seconds"])
    add_common(p, "--json")
    p.add_argument("--md", type=output_file, metavar="OUT", help="write the Markdown table")
    p.add_argument("--plot", type=output_file, metavar="OUT.png", help="write latency and throughput vs batch as a PNG")
    p.add_argument("--title", default="waste-edge benchmark", help="title of the Markdown section and the plot")
    add_common(p, "--quiet", False, help="no progress bars or log lines")
    _retired(p, "--batch", "--batches", "comma-separated batch sizes")


def _cmd_bench(args: argparse.Namespace) -> int:
    from waste_edge.bench.harness import BenchConfig, run_bench
    from waste_edge.bench.report import to_markdown, write_outputs

    report = run_bench(options_from(BenchConfig, args, progress=not args.quiet),
                       log=None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True)))
    doc = report.to_dict()
    print(to_markdown(doc, args.title))
    for path in write_outputs(doc, args.title, json=args.json, md=args.md, plot=args.plot):
        print(f"wrote {path}")
    if not report.any_measured:
        print("error: no combination could be measured (see the status column)", file=sys.stderr)
        return 1
    return 0


# -- section: data (check, split, download) ----------------------------------------


def _add_data(sub: argparse._SubParsersAction) -> None:
    from waste_edge.data.options import CheckOptions

    data = sub.add_parser(
        "data",
        help="check a dataset for bad files, duplicates and flip/rotation leakage; split without it; download",
        description="Dataset tools: check (corrupt files, duplicates, leakage), split (leak-free), download (Kaggle).",
    )
    dsub = data.add_subparsers(dest="data_cmd", metavar="{check,split,download}", required=True)
    c = _verb(dsub, "check", "report unreadable files, exact and flip/rotation near duplicates, and leakage between splits",
              CheckOptions, _cmd_data_check, (
        "example: waste-edge data check ../shared/data/waste-sample --json out/check.json\n"
        "         waste-edge data check data/kaggle --fail-on leakage   # for CI: exit 1 on leakage"))
    c.add_argument("dir", type=input_path, help="dataset folder or CSV manifest")
    add_common(c, "--json")
    add_options(c, CheckOptions)
    c.add_argument("--fail-on", choices=["never", "leakage", "conflicts", "any"], default="never",
                   help="exit 1 when the check finds leakage across splits, label conflicts, or any problem (default: %(default)s)")
    c.add_argument("--show", type=int_in(0, 1_000_000), default=10, help="pairs and files to list in the summary (default: %(default)s)")

    s = _verb(dsub, "split", "group-aware stratified train/test split: duplicates and flipped/rotated copies stay on one side",
              (
        "Run the check, join exact and near duplicates into groups, and split the groups (stratified by class, "
        "deterministic for --seed) so that no group spans train and test. Writes path,label,split,group with paths "
        "relative to the CSV's folder when the data lies under it (else absolute); `train linear --split-file` and any --data accept it."), _cmd_data_split,
        "example: waste-edge data split ../shared/data/waste-sample --out runs/split.csv --test-size 0.2 --seed 0")
    s.add_argument("dir", type=input_path, help="dataset folder or CSV manifest")
    add_common(s, "--out", required=True, help="CSV to write (path,label,split,group)")
    add_common(s, "--test-size", 0.2, help="test fraction per class (default: %(default)s)")
    add_common(s, "--seed", 0, help="seed of the group assignment (default: %(default)s)")
    add_options(s, CheckOptions)
    for p in (c, s):
        _retired(p, "--threshold", "--radius", "near-duplicate radius in bits")
        _retired(p, "--fine-threshold", "--fine-radius", "confirmation radius in bits")

    d = _verb(dsub, "download", "fetch the study's Kaggle dataset with kagglehub (needs network and Kaggle credentials)",
              (
        "Download rayhanzamzamy/non-and-biodegradable-waste-dataset with kagglehub (pip install 'waste-edge[data]'). "
        "Without credentials or network it fails at once and says how to place the data by hand."), _cmd_data_download,
        "example: KAGGLE_USERNAME=me KAGGLE_KEY=... waste-edge data download --out data/kaggle")
    add_common(d, "--out", type=output_folder, help="folder to download into (default: kagglehub's cache)")


def _run_data_check(args: argparse.Namespace) -> Any:
    from waste_edge.data.check import check_dataset
    from waste_edge.data.options import CheckOptions

    o = options_from(CheckOptions, args)
    return check_dataset(args.dir, threshold=o.radius, fine_threshold=o.fine_radius, workers=o.workers, cache_dir=o.cache,
                         use_cache=not o.no_cache, progress=sys.stderr.isatty())


def _cmd_data_check(args: argparse.Namespace) -> int:
    from waste_edge._io import write_json

    result = _run_data_check(args)
    print(result.summary(show=args.show))
    if args.json is not None:
        print(f"wrote {write_json(args.json, result.to_json(), indent=1)}")
    if result.should_fail(args.fail_on):
        print(f"error: the check found {args.fail_on if args.fail_on != 'any' else 'problems'} (--fail-on {args.fail_on})", file=sys.stderr)
        return 1
    return 0


def _cmd_data_split(args: argparse.Namespace) -> int:
    from waste_edge.data.split_groups import write_split

    result = write_split(_run_data_check(args), args.out, test_size=args.test_size, seed=args.seed)
    print(result.summary())
    return 0


def _cmd_data_download(args: argparse.Namespace) -> int:
    from waste_edge.data.download import download_dataset

    root = download_dataset(args.out)
    print(f"dataset in {root}\nnext: waste-edge data check {root}")
    return 0


# -- section: first run (info, demo) ----------------------------------------


def _add_first_run(sub: argparse._SubParsersAction) -> None:
    from waste_edge.runtime.camera import CameraConfig
    from waste_edge.runtime.demo import DemoOptions

    i = _verb(sub, "info", "show what a model is: classes, preprocessing, encoder, measured accuracy, size, sha256", (
        "Print a model's card. Without --model: the embedded default model (EfficientNet-Lite0 INT8 + logistic head). "
        "--check tensorrt lists every node TensorRT 10.x's ONNX parser would reject or degrade (rule and source for "
        "each) and exits 1 when there is one; `export --format engine` runs the same check before building."), _cmd_info, (
        "examples:\n"
        "  waste-edge info --model runs/lite0/model-int8.onnx --json\n"
        "  waste-edge info --model runs/clip/model-fp32.onnx --check tensorrt   # needs the [export] extra (onnx)"))
    add_options(i, ModelOptions, only=["model"])
    add_common(i, "--json", nargs="?", const="-", metavar="OUT", help="the full description as JSON, on stdout or to OUT")
    i.add_argument("--check", choices=["tensorrt"], default=None, help="also check the graph for a target runtime (tensorrt)")

    d = _verb(sub, "demo", "the main job with no setup: camera 0 if it opens, else a generated demo video",
              DemoOptions, _cmd_demo, "example: waste-edge demo --out demo-out   (what `make demo` runs)")
    add_options(d, SourceOptions, only=["device"],
                override={"device": {"type": int_in(0, 1023), "default": 0, "help": "camera index to try first (default: %(default)s)"}})
    add_options(d, ModelOptions)
    add_options(d, DemoOptions)
    add_options(d, CameraConfig)
    add_options(d, OutputOptions, only=["show"], override={"show": {"help": "never open a window"}})
    _retired(d, "--seconds", "--video-seconds", "length of the generated demo video")


def _cmd_info(args: argparse.Namespace) -> int:
    import json

    from waste_edge._io import write_json
    from waste_edge.runtime.model_info import describe_model, model_summary

    info = describe_model(args.model)
    report = None
    if args.check == "tensorrt":
        from waste_edge.export.tensorrt_lint import lint_path

        report = lint_path(info["path"])
        info["check"] = {"tensorrt": report.to_json()}
    if args.json is not None and str(args.json) != "-":
        print(f"wrote {write_json(args.json, info, indent=1)}")
    elif args.json is not None:
        print(json.dumps(info, indent=1))
    else:
        print(model_summary(info))
        if report is not None:
            print(report.summary())
    return 0 if report is None or report.passed else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from waste_edge.runtime.demo import DemoOptions, run_demo

    _log_to_stderr()
    o, m = options_from(DemoOptions, args), options_from(ModelOptions, args)
    result = run_demo(o.out, device=args.device, model=m.model, backend=m.backend, threads=m.threads, seconds=o.video_seconds,
                      max_frames=args.max_frames, show=args.show, say=lambda line: print(line, flush=True))
    print(result.summary.summary())
    print(f"annotated video: {result.video}\nevents (JSONL):  {result.events}")
    return 0


# -- section: adapt ----------------------------------------


def _add_adapt(sub: argparse._SubParsersAction) -> None:
    from waste_edge.adapt.options import AdaptOptions

    p = _verb(sub, "adapt", "refit a model's head on frames labelled at the bin (collection folder + labels.csv); no torch, seconds on a CPU",
              AdaptOptions, _cmd_adapt)
    add_options(p, ModelOptions, override={"backend": {"default": "cpu", "help": "where the embeddings are computed (default: %(default)s)"}})
    add_options(p, AdaptOptions)
    _retired(p, "--rehearsal", "--rehearsal-set", "the rehearsal set file")


def _cmd_adapt(args: argparse.Namespace) -> int:
    from waste_edge._io import write_json
    from waste_edge.adapt.adapter import adapt
    from waste_edge.adapt.fit import DEFAULT_C, FitConfig
    from waste_edge.adapt.options import AdaptOptions
    from waste_edge.runtime.model_path import resolve_model_path

    o, m = options_from(AdaptOptions, args), options_from(ModelOptions, args)
    if o.no_rehearsal and o.rehearsal_set is not None:
        print("error: --rehearsal-set and --no-rehearsal contradict each other", file=sys.stderr)
        return 2
    result = adapt(resolve_model_path(m.model), o.data, o.out, rehearsal=o.rehearsal_set, use_rehearsal=not o.no_rehearsal,
                   config=FitConfig(method=o.method, C=o.C if o.C is not None else DEFAULT_C), backend=m.backend, threads=m.threads,
                   batch_size=o.batch_size, progress=not o.quiet and sys.stderr.isatty(), log=lambda msg: print(msg, file=sys.stderr))
    print(result.summary())
    if o.json is not None:
        print(f"report: {write_json(o.json, result.to_dict())}")
    return 0


# -- section: serve ----------------------------------------


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from waste_edge.serve.actions import ACTIONS_HELP, WebhookOptions
    from waste_edge.serve.config import ServeConfig
    from waste_edge.serve.limits import AccessOptions

    s = _verb(sub, "serve", "the long-running service: live web page, HTTP API, MJPEG, SSE, MQTT events, Prometheus metrics",
              ServeConfig, _cmd_serve)
    add_options(s, SourceOptions, override={"device": {"action": "append", "default": [], "metavar": "[NAME=]SRC",
                                                       "help": "a source; repeat for several cameras"}})
    add_options(s, ModelOptions)
    add_options(s, OutputOptions, only=["jsonl"], override={"jsonl": {"metavar": "PATH", "help": "one JSON event per classified frame "
                                                                      "(with its camera), and a final stop record per camera"}})
    add_options(s, DecisionOptions)
    add_options(s, ServeConfig, exclude=["max_body_mb", "max_pixels"])
    add_options(s, CollectConfig)
    actions = add_options(s, HookOptions, title="acting on decisions", description=ACTIONS_HELP)
    add_options(actions, WebhookOptions)
    access = add_options(s, AccessOptions)
    add_options(access, ServeConfig, only=["max_body_mb", "max_pixels"])
    _retired(s, "--batch", "--batching", "auto|on|off: frames of several cameras in one inference call")
    _retired(s, "--save", "--save-dir", "annotated video per camera: DIR/CAMERA.mp4")


def _adapter_if_installed() -> Callable[..., Any] | None:
    """`waste_edge.adapt.adapter.adapt` for the service's POST /api/v1/adapt, None without the [adapt] extra."""
    try:
        from waste_edge.adapt.adapter import adapt
    except ImportError:
        return None
    return adapt


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from waste_edge.serve.actions import WebhookOptions, resolve_actions
    from waste_edge.serve.config import ServeConfig
    from waste_edge.serve.limits import AccessOptions
    from waste_edge.serve.server import run_server

    _log_to_stderr()
    logging.getLogger("waste_edge.serve").setLevel(logging.INFO)
    token, http, warnings = options_from(AccessOptions, args).resolve()
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr, flush=True)
    config = options_from(
        ServeConfig, args, devices=list(args.device), model=options_from(ModelOptions, args), decision=options_from(DecisionOptions, args),
        source=options_from(SourceOptions, args, device="0"), collect=_collect_config(args), jsonl=args.jsonl,
        adapter=_adapter_if_installed() if args.collect else None, token=token, http=http, models_dir=args.models_dir,
        actions=resolve_actions(options_from(HookOptions, args), options_from(WebhookOptions, args), mqtt=args.mqtt, mqtt_summary_s=args.mqtt_summary),
    )
    return run_server(config)


# -- The parser. Each section above contributes one `_add_*` function to REGISTRARS.

REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_train,
    _add_runtime,
    _add_export,
    _add_bench,
    _add_data,
    _add_first_run,
    _add_adapt,
    _add_serve,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="waste-edge",
        description="Tell biodegradable (B) from non-biodegradable (N) waste in camera frames, fast, on the edge.",
        epilog="Run `waste-edge <verb> --help` for the options of each verb.",
    )
    parser.add_argument("--version", action="version", version=f"waste-edge {__version__}")
    sub = parser.add_subparsers(dest="cmd", metavar="<verb>", required=True)
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from waste_edge._failsafe import run_verb
    from waste_edge._outputs import guard_cli_outputs

    parser = build_parser()
    args = parser.parse_args(argv)

    def verb() -> int:
        guard_cli_outputs(args)  # no verb writes over an input, into a folder, or twice onto one file
        return args.func(args)

    return run_verb(verb)  # one-line errors, pipes, full disks, SIGTERM: waste_edge/_failsafe.py


if __name__ == "__main__":
    sys.exit(main())
