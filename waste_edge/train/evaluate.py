"""Evaluation reports: the same files for every kind of run (metrics.json, report.txt, confusion_matrix.png, roc.png).

ROC is drawn from predicted probabilities, not hard labels (the study's ROC from hard labels collapses
the curve to a single point and understates what the model ranks correctly). The plots are scikit-learn's
own `ConfusionMatrixDisplay` and `RocCurveDisplay`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from waste_edge._io import atomic_write_text, write_json


@dataclass
class EvalReport:
    metrics: dict[str, Any]
    files: list[Path] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return float(self.metrics["accuracy"])

    @property
    def out_dir(self) -> Path | None:
        return self.files[0].parent if self.files else None

    def summary(self) -> str:
        m = self.metrics
        auc = "n/a" if m.get("roc_auc") is None else f"{m['roc_auc']:.4f}"
        return f"accuracy {m['accuracy']:.4f} (ROC AUC {auc}) on {m['n']} images, unreadable {m['n_unreadable']}\nreport: {self.out_dir}"


def headline(metrics: dict[str, Any]) -> str:
    """One line every trainer prints: accuracy, balanced accuracy and ROC AUC on n images."""
    auc = "n/a" if metrics.get("roc_auc") is None else f"{metrics['roc_auc']:.4f}"
    bal = "n/a" if metrics.get("balanced_accuracy") is None else f"{metrics['balanced_accuracy']:.4f}"
    return f"test accuracy {metrics['accuracy']:.4f} (balanced {bal}, ROC AUC {auc}) on {metrics['n']} images"


def compute_metrics(y_true: Sequence[str], proba: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class P/R/F1, confusion matrix and ROC AUC from probabilities."""
    from sklearn.metrics import (
        accuracy_score, balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score,
    )

    classes = list(classes)
    y = np.array([classes.index(t) for t in y_true])
    pred = proba.argmax(axis=1)
    labels = list(range(len(classes)))
    p, r, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    cm = confusion_matrix(y, pred, labels=labels)
    out: dict[str, Any] = {
        "n": int(len(y)),
        "classes": classes,
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if len(set(y.tolist())) > 1 else None,
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_axes": "rows = true class, columns = predicted class, in `classes` order",
        "roc_auc": None,
    }
    if len(set(y.tolist())) == len(classes):
        if len(classes) == 2:
            out["roc_auc"] = float(roc_auc_score(y, proba[:, 1]))
            out["roc_positive_class"] = classes[1]
        else:
            out["roc_auc"] = float(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    return out


def _figure() -> tuple[Any, Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=120)
    return plt, fig, ax


def _save(plt: Any, fig: Any, ax: Any, path: Path, title: str) -> None:
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    plt, fig, ax = _figure()
    ConfusionMatrixDisplay(cm, display_labels=classes).plot(ax=ax, cmap="Blues", colorbar=False)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    _save(plt, fig, ax, path, title)


def _plot_roc(y_true: Sequence[str], proba: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    from sklearn.metrics import RocCurveDisplay

    plt, fig, ax = _figure()
    y = np.array([classes.index(t) for t in y_true])
    plotted = 0
    for k in [1] if len(classes) == 2 else range(len(classes)):
        if len(set((y == k).tolist())) == 2:  # a curve needs both positives and negatives
            RocCurveDisplay.from_predictions(y == k, proba[:, k], name=classes[k], ax=ax, plot_chance_level=not plotted)
            plotted += 1
    if plotted:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    _save(plt, fig, ax, path, title)


def _report_text(metrics: dict[str, Any], unreadable: list[tuple[str, str]], title: str) -> str:
    classes = metrics["classes"]
    lines = [title, "=" * len(title), ""]
    bal = metrics.get("balanced_accuracy")
    auc_txt = "n/a" if metrics.get("roc_auc") is None else f"{metrics['roc_auc']:.4f}"
    lines += [f"images evaluated : {metrics['n']}", f"accuracy         : {metrics['accuracy']:.4f}",
              f"balanced accuracy: {'n/a' if bal is None else f'{bal:.4f}'}", f"ROC AUC (probabilities): {auc_txt}", ""]
    lines.append(f"{'class':>12} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
    for c in classes:
        pc = metrics["per_class"][c]
        lines.append(f"{c:>12} {pc['precision']:9.4f} {pc['recall']:9.4f} {pc['f1']:9.4f} {pc['support']:8d}")
    lines += ["", "confusion matrix (rows true, columns predicted):", "      " + " ".join(f"{c:>6}" for c in classes)]
    for c, row in zip(classes, metrics["confusion_matrix"]):
        lines.append(f"{c:>6}" + " ".join(f"{v:6d}" for v in row))
    lines += ["", f"unreadable files skipped: {len(unreadable)}"]
    lines += [f"  {p}: {why}" for p, why in unreadable]
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: str | Path,
    y_true: Sequence[str],
    proba: np.ndarray,
    classes: Sequence[str],
    *,
    unreadable: Sequence[tuple[str, str]] = (),
    title: str = "evaluation",
    extra: dict[str, Any] | None = None,
) -> EvalReport:
    """metrics.json, report.txt, confusion_matrix.png and roc.png in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classes = list(classes)
    metrics = compute_metrics(y_true, proba, classes)
    metrics["unreadable"] = [{"path": p, "reason": why} for p, why in unreadable]
    metrics["n_unreadable"] = len(unreadable)
    metrics.update(extra or {})
    files = [write_json(out / "metrics.json", metrics)]
    files.append(atomic_write_text(out / "report.txt", _report_text(metrics, list(unreadable), title)))
    _plot_confusion(np.asarray(metrics["confusion_matrix"]), classes, out / "confusion_matrix.png", title)
    files.append(out / "confusion_matrix.png")
    _plot_roc(y_true, proba, classes, out / "roc.png", title)
    files.append(out / "roc.png")
    return EvalReport(metrics, files)
