"""Where a model goes wrong: accuracy per data source, and the mistakes it is most sure of.

A mixed dataset hides weak spots in one accuracy figure: waste-sample mixes Kaggle originals, TrashNet (N only)
and web photos, and a model can be perfect on one source and poor on another. The most confident mistakes are
where label noise shows (a photo the model is 99 % sure about and the label contradicts) and what a reviewer
should look at first. Works on probabilities from any path (runtime, reference), so it imports no model code.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def read_sources(root: str | Path, column: str = "source") -> dict[str, str]:
    """`labels.csv` beside the split folders (waste-sample's manifest): resolved path -> value of `column`."""
    manifest = Path(root) / "labels.csv"
    if not manifest.is_file():
        return {}
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or column not in rows[0] or "path" not in rows[0]:
        return {}
    return {str((Path(root) / r["path"]).resolve()): r[column] for r in rows}


def read_predictions(csv_path: str | Path, classes: Sequence[str]) -> tuple[list[str], list[int], np.ndarray, list[str]]:
    """(paths, truth, probabilities [N, K], skipped) of a `waste-edge predict` CSV over labelled class folders.

    The truth of a row is its folder name (TEST/B/x.jpg -> B); error rows and rows outside the class folders are
    returned in `skipped` (path: why), never dropped silently."""
    paths: list[str] = []
    truth: list[int] = []
    proba: list[list[float]] = []
    skipped: list[str] = []
    with Path(csv_path).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            label = Path(row["path"]).parent.name
            if row.get("error"):
                skipped.append(f"{row['path']}: {row['error']}")
            elif label not in classes:
                skipped.append(f"{row['path']}: folder {label!r} is not a class of {list(classes)}")
            else:
                paths.append(row["path"])
                truth.append(list(classes).index(label))
                proba.append([float(row[f"p_{c}"]) for c in classes])
    return paths, truth, np.asarray(proba, dtype=np.float64).reshape(-1, len(classes)), skipped


def per_group_accuracy(paths: Sequence[str | Path], truth: Sequence[int], proba: np.ndarray, groups: dict[str, str],
                       classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{group: {accuracy, n, errors, per_class: {class: n}}} for every group the paths fall in ('unknown' if none)."""
    pred = np.asarray(proba).argmax(1)
    out: dict[str, dict[str, Any]] = {}
    for p, t, k in zip(paths, truth, pred):
        g = groups.get(str(Path(p).resolve()), "unknown")
        row = out.setdefault(g, {"n": 0, "errors": 0, "per_class": {}})
        row["n"] += 1
        row["errors"] += int(t != k)
        row["per_class"][classes[t]] = row["per_class"].get(classes[t], 0) + 1
    for row in out.values():
        row["accuracy"] = 1.0 - row["errors"] / row["n"]
    return dict(sorted(out.items()))


def confident_mistakes(paths: Sequence[str | Path], truth: Sequence[int], proba: np.ndarray, classes: Sequence[str],
                       top: int = 10, root: str | Path | None = None) -> list[dict[str, Any]]:
    """The `top` wrong predictions with the highest confidence in the wrong class, most confident first."""
    proba = np.asarray(proba)
    pred = proba.argmax(1)
    wrong = [i for i, (t, k) in enumerate(zip(truth, pred)) if t != k]
    wrong.sort(key=lambda i: -float(proba[i, pred[i]]))
    rows = []
    for i in wrong[:top]:
        path = Path(paths[i])
        rows.append({"path": str(path.resolve().relative_to(Path(root).resolve())) if root else str(path),
                     "label": classes[truth[i]], "predicted": classes[pred[i]], "confidence": float(proba[i, pred[i]])})
    return rows


def format_groups(per_group: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'source':<24}{'n':>6}{'errors':>8}{'accuracy':>10}  classes"]
    for g, row in per_group.items():
        classes = ", ".join(f"{c} {n}" for c, n in sorted(row["per_class"].items()))
        lines.append(f"{g:<24}{row['n']:>6}{row['errors']:>8}{row['accuracy']:>10.4f}  {classes}")
    return "\n".join(lines)


def format_mistakes(mistakes: list[dict[str, Any]]) -> str:
    lines = [f"{'confidence':>10}  {'label':>5} -> {'pred':<4}  file"]
    lines += [f"{m['confidence']:>10.4f}  {m['label']:>5} -> {m['predicted']:<4}  {m['path']}" for m in mistakes]
    return "\n".join(lines)
