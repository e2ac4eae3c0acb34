#!/usr/bin/env python3
"""Accuracy per data source and the most confident mistakes of a model, from `waste-edge predict` over a labelled
split (the torch-free runtime: the same path as the default model's card figures and its test).

    .venv/bin/waste-edge predict ../shared/data/waste-sample/TEST --out pred.csv --quiet
    .venv/bin/python scripts/error_report.py pred.csv [--data ../shared/data/waste-sample] [--top 10] [--json report.json]

The truth of each photo is its class folder; its source comes from the dataset's labels.csv (waste-sample:
kaggle_nonbio_sample, trashnet, cardstdani_web), without one every photo counts as 'unknown'.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from waste_edge._io import write_json  # noqa: E402
from waste_edge.train.error_analysis import (  # noqa: E402
    confident_mistakes, format_groups, format_mistakes, per_group_accuracy, read_predictions, read_sources,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("predictions", type=Path, help="CSV written by `waste-edge predict` over class folders")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "waste-sample", help="dataset root (its labels.csv names the sources)")
    ap.add_argument("--classes", default="B,N", help="class order of the model (default: %(default)s)")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    args = ap.parse_args(argv)
    classes = args.classes.split(",")
    paths, truth, proba, skipped = read_predictions(args.predictions, classes)
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    if not paths:
        print(f"error: {args.predictions}: no prediction rows in class folders {classes}", file=sys.stderr)
        return 1
    groups = per_group_accuracy(paths, truth, proba, read_sources(args.data), classes)
    mistakes = confident_mistakes(paths, truth, proba, classes, top=args.top, root=args.data)
    accuracy = float((proba.argmax(1) == np.array(truth)).mean())
    print(f"{args.predictions}: accuracy {accuracy:.4f} on {len(paths)} photos ({len(skipped)} skipped)")
    print(format_groups(groups))
    print(f"\n{len(mistakes)} most confident mistakes:")
    print(format_mistakes(mistakes))
    if args.json:
        write_json(args.json, {"predictions": str(args.predictions), "accuracy": accuracy, "n": len(paths), "per_source": groups, "mistakes": mistakes})
    return 0


if __name__ == "__main__":
    sys.exit(main())
