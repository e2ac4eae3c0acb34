"""Per-source accuracy and most confident mistakes (issue 17's error analysis), from a real `predict` CSV layout."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from waste_edge.train.error_analysis import confident_mistakes, per_group_accuracy, read_predictions, read_sources


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    """TEST/{B,N} files and a labels.csv naming two sources, the layout of waste-sample."""
    rows = [("TEST/B/a.jpg", "kaggle"), ("TEST/B/b.jpg", "kaggle"), ("TEST/N/c.jpg", "trashnet"), ("TEST/N/d.jpg", "kaggle")]
    for rel, _ in rows:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    with (tmp_path / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "source"])
        w.writerows((rel, rel.split("/")[1], src) for rel, src in rows)
    return tmp_path


def _write_predictions(path: Path, root: Path) -> None:
    rows = [  # a right, b wrong (N at 0.9), c wrong (B at 0.6), d right, one error row and one file outside the classes
        {"path": root / "TEST/B/a.jpg", "label": "B", "p_B": 0.8, "p_N": 0.2, "error": ""},
        {"path": root / "TEST/B/b.jpg", "label": "N", "p_B": 0.1, "p_N": 0.9, "error": ""},
        {"path": root / "TEST/N/c.jpg", "label": "B", "p_B": 0.6, "p_N": 0.4, "error": ""},
        {"path": root / "TEST/N/d.jpg", "label": "N", "p_B": 0.3, "p_N": 0.7, "error": ""},
        {"path": root / "TEST/N/torn.jpg", "label": "", "p_B": "", "p_N": "", "error": "cannot decode"},
        {"path": root / "TEST/other/e.jpg", "label": "B", "p_B": 0.9, "p_N": 0.1, "error": ""},
    ]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "frame", "label", "confidence", "p_B", "p_N", "error"], restval="")
        w.writeheader()
        w.writerows(rows)


def test_sources_accuracy_and_mistakes_from_a_predict_csv(dataset, tmp_path):
    _write_predictions(tmp_path / "pred.csv", dataset)
    paths, truth, proba, skipped = read_predictions(tmp_path / "pred.csv", ["B", "N"])
    assert truth == [0, 0, 1, 1] and proba.shape == (4, 2) and len(skipped) == 2  # error row and non-class folder reported
    assert any("cannot decode" in s for s in skipped) and any("'other'" in s for s in skipped)

    groups = per_group_accuracy(paths, truth, proba, read_sources(dataset), ["B", "N"])
    assert groups["kaggle"]["n"] == 3 and groups["kaggle"]["errors"] == 1 and groups["kaggle"]["accuracy"] == pytest.approx(2 / 3)
    assert groups["trashnet"] == {"n": 1, "errors": 1, "per_class": {"N": 1}, "accuracy": 0.0}

    mistakes = confident_mistakes(paths, truth, proba, ["B", "N"], top=10, root=dataset)
    assert [m["path"] for m in mistakes] == ["TEST/B/b.jpg", "TEST/N/c.jpg"]  # most confident first, relative to the root
    assert mistakes[0]["label"] == "B" and mistakes[0]["predicted"] == "N" and mistakes[0]["confidence"] == pytest.approx(0.9)
    assert len(confident_mistakes(paths, truth, proba, ["B", "N"], top=1)) == 1


def test_photos_without_a_manifest_count_as_unknown(tmp_path):
    groups = per_group_accuracy(["x/B/a.jpg"], [0], np.array([[0.2, 0.8]]), read_sources(tmp_path), ["B", "N"])
    assert read_sources(tmp_path) == {} and groups == {"unknown": {"n": 1, "errors": 1, "per_class": {"B": 1}, "accuracy": 0.0}}
