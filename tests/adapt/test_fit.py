"""The head refit: sklearn's coefficients folded into the graph's softmax form, and what each method keeps."""

import numpy as np
import pytest

from waste_edge.adapt.fit import FitConfig, _fold, fit_head, resolve_method
from waste_edge.adapt.graph import AdaptError, HeadConstants
from waste_edge.runtime.rehearsal import RehearsalSet

CLASSES = ["B", "N"]


def binary_head(w: np.ndarray, b: float) -> HeadConstants:
    return HeadConstants(np.stack([np.zeros_like(w), w], 1).astype(np.float32), np.array([0.0, b], np.float32))


def domains(seed=0, d=16):
    """Old domain: the classes differ along axis 0 only. New camera (`shift` > 0): axis 0 is pulled toward B
    and barely separates the classes, axis 1 does. The old head errs there; a head of new labels alone
    ignores axis 0 and fails on the old domain."""
    rng = np.random.default_rng(seed)

    def sample(n, shift):
        y = rng.integers(0, 2, n)
        sign = np.where(y == 1, 1.0, -1.0)
        x = rng.normal(0, 1, (n, d))
        x[:, 0] += sign * (2.0 if shift == 0 else 0.5) - shift
        x[:, 1] += sign * (2.0 if shift else 0.0)
        return x, y

    return sample


def test_fold_reproduces_sklearn_probabilities_for_every_method():
    from sklearn.linear_model import LogisticRegression

    sample = domains()
    x, y = sample(200, 0.0)
    old = binary_head(np.r_[1.0, np.zeros(15)], 0.1)
    for prior in (False, True):
        feats = np.hstack([x, old.logits(x)]) if prior else x
        clf = LogisticRegression(C=0.5, max_iter=2000).fit(feats, y)
        head = _fold(clf.coef_, clf.intercept_, old, 2, x.shape[1], prior)
        np.testing.assert_allclose(head.predict_proba(x), clf.predict_proba(feats), atol=1e-5)


def test_three_classes_fold():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (300, 5))
    y = x[:, :3].argmax(1)
    old = HeadConstants(rng.normal(0, 1, (5, 3)).astype(np.float32), rng.normal(0, 1, 3).astype(np.float32))
    feats = np.hstack([x, old.logits(x)])
    clf = LogisticRegression(C=1.0, max_iter=3000).fit(feats, y)
    np.testing.assert_allclose(_fold(clf.coef_, clf.intercept_, old, 3, 5, True).predict_proba(x), clf.predict_proba(feats), atol=1e-5)
    res = fit_head(old, ["a", "b", "c"], x[:60], y[:60], None, FitConfig(method="prior"))
    assert res.head.weight.shape == (5, 3) and res.new_accuracy_after >= res.new_accuracy_before


def test_rehearsal_and_prior_keep_the_old_domain_labels_only_forgets():
    sample = domains(1)
    x_old, y_old = sample(2000, 0.0)
    x_new, y_new = sample(2000, 2.0)
    from sklearn.linear_model import LogisticRegression

    base = LogisticRegression(C=0.316, max_iter=2000).fit(x_old[:1000], y_old[:1000])
    old = binary_head(base.coef_[0], base.intercept_[0])
    rs = RehearsalSet(x_old[1000:1128].astype(np.float32), y_old[1000:1128], CLASSES, "e", "none")

    def acc(h, x, y):
        return (h.logits(x).argmax(1) == y).mean()

    labelled = np.random.default_rng(2).choice(np.arange(1000, 2000), 50, replace=False)
    results = {m: fit_head(old, CLASSES, x_new[labelled], y_new[labelled], rs, FitConfig(method=m)) for m in ("labels-only", "rehearsal", "prior", "rehearsal+prior")}
    old_acc, new_acc = acc(old, x_old[:1000], y_old[:1000]), acc(old, x_new[:1000], y_new[:1000])
    for m, r in results.items():
        assert acc(r.head, x_new[:1000], y_new[:1000]) > new_acc + 0.05, m  # every method learns the new camera
    keep = {m: acc(r.head, x_old[:1000], y_old[:1000]) - old_acc for m, r in results.items()}
    assert keep["labels-only"] < -0.3 and keep["rehearsal+prior"] > -0.1 and keep["rehearsal"] > -0.1  # forgets vs keeps
    r = results["rehearsal+prior"]
    assert r.n_rehearsal == 128 and r.counts == {"B": int((y_new[labelled] == 0).sum()), "N": int((y_new[labelled] == 1).sum())}
    assert r.new_accuracy_after > r.new_accuracy_before and r.rehearsal_agreement > 0.9
    assert r.settings["prior_scale"] == 1.0 and results["prior"].settings["prior_scale"] == 10.0


def test_labels_that_agree_with_the_old_head_barely_move_it():
    sample = domains(4)
    x, y = sample(400, 0.0)
    from sklearn.linear_model import LogisticRegression

    base = LogisticRegression(C=0.316, max_iter=2000).fit(x, y)
    old = binary_head(base.coef_[0], base.intercept_[0])
    res = fit_head(old, CLASSES, x[:40], y[:40], None, FitConfig(method="prior"))
    assert (res.head.logits(x).argmax(1) == old.logits(x).argmax(1)).mean() > 0.97


def test_one_class_without_rehearsal_is_a_clear_error_with_rehearsal_fine():
    sample = domains(5)
    x, y = sample(100, 0.0)
    old = binary_head(np.r_[1.0, np.zeros(15)], 0.0)
    only_b = x[y == 0][:10]
    with pytest.raises(AdaptError, match="no training example of class N"):
        fit_head(old, CLASSES, only_b, np.zeros(10, int), None, FitConfig(method="prior"))
    rs = RehearsalSet(x[:40].astype(np.float32), y[:40], CLASSES, "e", "none")
    assert fit_head(old, CLASSES, only_b, np.zeros(10, int), rs).method == "rehearsal+prior"
    with pytest.raises(AdaptError, match="features are 3-d"):
        fit_head(old, CLASSES, np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(AdaptError, match="no labelled frames"):
        fit_head(old, CLASSES, np.zeros((0, 16)), np.zeros(0, int))


def test_method_resolution():
    assert resolve_method("auto", True) == "rehearsal+prior" and resolve_method("auto", False) == "prior"
    with pytest.raises(AdaptError, match="needs a rehearsal set"):
        resolve_method("rehearsal", False)
    with pytest.raises(AdaptError, match="unknown method"):
        resolve_method("magic", True)
