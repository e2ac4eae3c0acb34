#!/usr/bin/env python3
"""Accuracy per data source and the most confident mistakes of a fused model on a labelled split, through the
torch-free runtime (the same path as the default model's card figures).

    .venv/bin/python scripts/error_report.py --model waste_edge/models/default.onnx [--data ../shared/data/waste-sample] [--top 10]

The source of each photo comes from the dataset's labels.csv (waste-sample: kaggle_nonbio_sample, trashnet,
cardstdani_web); without one every photo counts as 'unknown'.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from build_default_model import REPO, classify_files  # scripts/ is on sys.path when run as a script

from waste_edge.data.discovery import discover  # noqa: E402
from waste_edge.runtime.model_info import read_metadata  # noqa: E402
from waste_edge.train.error_analysis import (  # noqa: E402
    confident_mistakes, format_groups, format_mistakes, per_group_accuracy, read_sources,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "waste_edge" / "models" / "default.onnx")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "waste-sample")
    ap.add_argument("--split", default="test")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    args = ap.parse_args(argv)
    classes = read_metadata(args.model).classes
    proba, used = classify_files(args.model, discover(args.data).split(args.split), args.threads)
    truth = [classes.index(s.label) for s in used]
    paths = [s.path for s in used]
    groups = per_group_accuracy(paths, truth, proba, read_sources(args.data), classes)
    mistakes = confident_mistakes(paths, truth, proba, classes, top=args.top, root=args.data)
    accuracy = float((proba.argmax(1) == np.array(truth)).mean())
    print(f"{args.model}: accuracy {accuracy:.4f} on {len(used)} {args.split.upper()} photos of {args.data}")
    print(format_groups(groups))
    print(f"\n{len(mistakes)} most confident mistakes:")
    print(format_mistakes(mistakes))
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "accuracy": accuracy, "n": len(used), "per_source": groups,
                                         "mistakes": mistakes}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
