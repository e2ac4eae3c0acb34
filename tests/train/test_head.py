import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from waste_edge.train.head import HeadError, LinearHead, fit_head


def _data(n=60, d=6, seed=0, classes=("B", "N")):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = [classes[int(v > 0) if len(classes) == 2 else int(v * 10) % len(classes)] for v in x[:, 0]]
    return x, y


def test_study_defaults_match_sklearn_exactly():
    x, y = _data()
    head = fit_head(x, y)
    ref = LogisticRegression(C=0.316, max_iter=1000, random_state=0).fit(x, y)
    assert head.hyperparameters["C"] == 0.316 and head.hyperparameters["max_iter"] == 1000
    np.testing.assert_allclose(head.predict_proba(x), ref.predict_proba(x), atol=1e-12)
    np.testing.assert_allclose(head.to_sklearn().predict_proba(x), ref.predict_proba(x), atol=1e-12)


@pytest.mark.parametrize("classes", [("B", "N"), ("a", "b", "c")])
def test_softmax_weights_reproduce_predict_proba(classes):
    x, y = _data(classes=classes)
    head = fit_head(x, y, l2_normalize=True)
    w, b = head.softmax_weights()
    z = head.normalise(x) @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(p, head.predict_proba(x), atol=1e-6)
    assert w.shape == (x.shape[1], len(classes))


def test_json_round_trip(tmp_path):
    x, y = _data()
    head = fit_head(x, y, C=2.0, l2_normalize=True, class_weight="balanced")
    head.save(tmp_path / "head.json")
    back = LinearHead.load(tmp_path / "head.json")
    assert back.classes == head.classes and back.l2_normalize and back.hyperparameters["class_weight"] == "balanced"
    np.testing.assert_array_equal(back.coef, head.coef)
    assert back.sha256() == head.sha256()
    doc = json.loads((tmp_path / "head.json").read_text())
    assert set(doc) >= {"classes", "coef", "intercept", "normalization", "hyperparameters", "sha256"}


@pytest.mark.parametrize(
    "tamper, why",
    [
        (lambda d: d["coef"][0].__setitem__(0, d["coef"][0][0] + 1e-3), "sha256"),
        (lambda d: d.__setitem__("classes", ["B"]), "classes"),
        (lambda d: d.__setitem__("coef", [[1.0], [2.0]]), "coef must have shape"),
        (lambda d: d.__setitem__("format", "pickle"), "format"),
        (lambda d: d["normalization"].__setitem__("l2", "yes"), "normalization"),
    ],
)
def test_tampered_head_is_rejected(tmp_path, tamper, why):
    x, y = _data()
    fit_head(x, y).save(tmp_path / "head.json")
    doc = json.loads((tmp_path / "head.json").read_text())
    tamper(doc)
    (tmp_path / "head.json").write_text(json.dumps(doc))
    with pytest.raises(HeadError, match=why):
        LinearHead.load(tmp_path / "head.json")


def test_truncated_head_file_is_rejected(tmp_path):
    x, y = _data()
    text = fit_head(x, y).save(tmp_path / "head.json").read_text()
    (tmp_path / "head.json").write_text(text[: len(text) // 2])
    with pytest.raises(HeadError, match="not valid JSON"):
        LinearHead.load(tmp_path / "head.json")


def test_sweep_picks_c_on_training_data_only():
    x, y = _data(n=80)
    head = fit_head(x, y, sweep=True)
    sweep = head.hyperparameters["sweep"]
    assert head.hyperparameters["C"] in sweep["grid"] and sweep["cv_folds"] == 5
    assert 0.5 <= sweep["best_cv_accuracy"] <= 1.0
