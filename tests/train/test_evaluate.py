import json

import numpy as np
import pytest

from waste_edge.train.evaluate import compute_metrics, write_report


def test_metrics_against_hand_computed_confusion_matrix():
    # true: B B B B N N N ; predicted: B B B N N N B  -> TP(B)=3, FN(B)=1, FP(B)=1, TN=2
    y = ["B", "B", "B", "B", "N", "N", "N"]
    p_n = np.array([0.1, 0.2, 0.3, 0.7, 0.9, 0.8, 0.4])
    proba = np.stack([1 - p_n, p_n], axis=1)
    m = compute_metrics(y, proba, ["B", "N"])
    assert m["confusion_matrix"] == [[3, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert m["per_class"]["B"]["precision"] == pytest.approx(3 / 4)
    assert m["per_class"]["N"]["recall"] == pytest.approx(2 / 3)
    # AUC from probabilities: pairs (N score > B score) over 12 pairs: N scores .9,.8,.4 vs B .1,.2,.3,.7
    assert m["roc_auc"] == pytest.approx((4 + 4 + 3) / 12)


def test_report_files_and_unreadable_listing(tmp_path):
    y = ["B", "N", "B", "N"]
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    rep = write_report(tmp_path, y, proba, ["B", "N"], unreadable=[("bad one.jpg", "corrupt or truncated image")])
    for name in ("metrics.json", "report.txt", "confusion_matrix.png", "roc.png"):
        assert (tmp_path / name).stat().st_size > 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["accuracy"] == 1.0 and m["n_unreadable"] == 1 and m["unreadable"][0]["path"] == "bad one.jpg"
    assert "bad one.jpg: corrupt or truncated image" in (tmp_path / "report.txt").read_text()
    assert rep.accuracy == 1.0
