"""The logistic-regression head as plain, validated JSON (`head.json`), never a pickle.

Training uses scikit-learn's `LogisticRegression` (the study's C=0.316, max_iter=1000); what is saved is
only what inference needs: classes, weights, intercepts, the feature normalisation, the hyper-parameters,
and a sha256 over the canonical content so model files and cards can name the exact head they embed.
Loading validates shapes and the checksum, so a hand-edited or truncated file is rejected, not trusted.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from waste_edge._io import JsonFileError, read_json, write_json
from waste_edge.errors import WasteEdgeError

HEAD_FORMAT = "waste-edge/linear-head"
HEAD_VERSION = 1
STUDY_C = 0.316


class HeadError(WasteEdgeError):
    """head.json missing, malformed, or failing its checksum."""


@dataclass
class LinearHead:
    classes: list[str]
    coef: np.ndarray  # sklearn layout: [1, D] for two classes (positive = classes[1]), [K, D] otherwise
    intercept: np.ndarray  # [1] or [K]
    l2_normalize: bool = False  # features are L2-normalised before the head
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.coef.shape[1])

    def logits(self, features: np.ndarray) -> np.ndarray:
        x = self.normalise(features)
        return x @ self.coef.T.astype(np.float64) + self.intercept.astype(np.float64)

    def normalise(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        if self.l2_normalize:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Same numbers as sklearn's predict_proba (sigmoid for two classes, softmax otherwise)."""
        z = self.logits(features)
        if len(self.classes) == 2:
            p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.stack([1.0 - p1, p1], axis=1)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def softmax_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """[D, K] weights and [K] bias whose softmax equals predict_proba: what a fused graph embeds.

        For two classes sigmoid(z) == softmax([0, z]), so the K=2 form is (0, coef) - exact, no ai.onnx.ml ops.
        """
        if len(self.classes) == 2:
            w = np.concatenate([np.zeros_like(self.coef), self.coef], axis=0)
            b = np.concatenate([np.zeros_like(self.intercept), self.intercept])
        else:
            w, b = self.coef, self.intercept
        return w.T.astype(np.float32), b.astype(np.float32)

    def to_sklearn(self) -> Any:
        """A fitted `LogisticRegression` with these weights: the reference pipeline's predict_proba."""
        from sklearn.linear_model import LogisticRegression

        hp = self.hyperparameters
        clf = LogisticRegression(C=float(hp.get("C", STUDY_C)), max_iter=int(hp.get("max_iter", 1000)))
        clf.classes_ = np.array(self.classes)
        clf.coef_ = self.coef.astype(np.float64)
        clf.intercept_ = self.intercept.astype(np.float64)
        clf.n_features_in_ = self.dim
        return clf

    # -- JSON ------------------------------------------------------------------------------------------

    def _content(self) -> dict[str, Any]:
        return {
            "format": HEAD_FORMAT,
            "version": HEAD_VERSION,
            "classes": list(self.classes),
            "coef": self.coef.astype(np.float64).tolist(),
            "intercept": self.intercept.astype(np.float64).tolist(),
            "normalization": {"l2": bool(self.l2_normalize)},
            "hyperparameters": self.hyperparameters,
        }

    def sha256(self) -> str:
        canonical = json.dumps(self._content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def save(self, path: str | Path) -> Path:
        doc = self._content()
        doc["sha256"] = self.sha256()
        return write_json(path, doc, indent=1)

    @classmethod
    def load(cls, path: str | Path) -> "LinearHead":
        p = Path(path)
        try:
            doc = read_json(p)
        except FileNotFoundError:
            raise HeadError(f"{p}: no head.json (is this a run directory written by `train linear`?)") from None
        except JsonFileError as e:
            raise HeadError(str(e)) from None
        return cls.from_dict(doc, where=str(p))

    @classmethod
    def from_dict(cls, doc: Any, where: str = "head") -> "LinearHead":
        def bad(why: str) -> HeadError:
            return HeadError(f"{where}: invalid head ({why})")

        if not isinstance(doc, dict) or doc.get("format") != HEAD_FORMAT:
            raise bad(f"format must be {HEAD_FORMAT!r}")
        if doc.get("version") != HEAD_VERSION:
            raise bad(f"unsupported version {doc.get('version')!r}")
        classes = doc.get("classes")
        if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
            raise bad("classes must be a list of at least two distinct names")
        try:
            coef = np.asarray(doc["coef"], dtype=np.float64)
            intercept = np.asarray(doc["intercept"], dtype=np.float64)
        except (KeyError, ValueError, TypeError) as e:
            raise bad(f"coef/intercept: {e}") from None
        rows = 1 if len(classes) == 2 else len(classes)
        if coef.ndim != 2 or coef.shape[0] != rows or coef.shape[1] < 1:
            raise bad(f"coef must have shape [{rows}, D], got {list(coef.shape)}")
        if intercept.shape != (rows,):
            raise bad(f"intercept must have shape [{rows}], got {list(intercept.shape)}")
        if not (np.all(np.isfinite(coef)) and np.all(np.isfinite(intercept))):
            raise bad("non-finite weights")
        norm = doc.get("normalization", {})
        if not isinstance(norm, dict) or not isinstance(norm.get("l2", False), bool):
            raise bad("normalization must be {'l2': bool}")
        hp = doc.get("hyperparameters", {})
        if not isinstance(hp, dict):
            raise bad("hyperparameters must be an object")
        for key, kind in (("C", float), ("max_iter", int)):  # what to_sklearn reads: numbers, finite, positive
            value = hp.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value)
                                      or value <= 0 or (kind is int and value != int(value))):
                raise bad(f"hyperparameter {key} must be a positive {'integer' if kind is int else 'number'}, got {value!r}")
        head = cls(classes, coef, intercept, bool(norm.get("l2", False)), hp)
        if doc.get("sha256") != head.sha256():
            raise bad("sha256 does not match the content: the file was modified or corrupted")
        return head


def fit_head(
    features: np.ndarray,
    labels: list[str],
    *,
    C: float = STUDY_C,
    sweep: bool = False,
    l2_normalize: bool = False,
    class_weight: str | None = None,
    max_iter: int = 1000,
    seed: int = 0,
) -> LinearHead:
    """Fit the study's head; with `sweep`, choose C by stratified 5-fold CV on these (training) features only."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    classes = sorted(set(labels))
    if len(classes) < 2:
        raise HeadError(f"training data has a single class ({classes}); a classifier needs two")
    x = LinearHead(classes, np.zeros((1, features.shape[1])), np.zeros(1), l2_normalize).normalise(features)
    y = np.asarray(labels)
    hp: dict[str, Any] = {"C": C, "max_iter": max_iter, "class_weight": class_weight, "random_state": seed, "solver": "lbfgs"}
    if sweep:
        n_splits = int(min(5, np.bincount(np.unique(y, return_inverse=True)[1]).min()))
        if n_splits < 2:
            raise HeadError("--sweep needs at least two training images per class")
        grid = [float(c) for c in np.logspace(-3, 2, 11)] + [STUDY_C]
        search = GridSearchCV(
            LogisticRegression(max_iter=max_iter, class_weight=class_weight, random_state=seed),
            {"C": sorted(set(grid))}, cv=StratifiedKFold(n_splits, shuffle=True, random_state=seed), scoring="accuracy",
        )
        search.fit(x, y)
        C = float(search.best_params_["C"])
        hp.update(C=C, sweep={"grid": sorted(set(grid)), "cv_folds": n_splits, "best_cv_accuracy": float(search.best_score_)})
    clf = LogisticRegression(C=C, max_iter=max_iter, class_weight=class_weight, random_state=seed)
    clf.fit(x, y)
    hp["n_iter"] = int(np.max(clf.n_iter_))
    if not all(math.isfinite(v) for v in clf.coef_.ravel()):
        raise HeadError("the fitted head has non-finite weights")
    return LinearHead([str(c) for c in clf.classes_], clf.coef_.copy(), clf.intercept_.copy(), l2_normalize, hp)
