"""Refit the linear head on new labels without forgetting the old ones (scikit-learn, seconds on a CPU).

Methods (`benchmarks/adapt.py` measures each; see the README section "Adapt at the bin"):

- `rehearsal`: `LogisticRegression` on the new labelled embeddings plus the rehearsal set (a sample of
  the original training embeddings shipped beside the model).
- `prior`: regularised toward the old head. scikit-learn's L2 penalty pulls weights toward zero, not
  toward old weights, so the fit gets one more feature per class: the old head's logit (times
  `prior_scale`). The model `x @ d + a * old_logit + c` reproduces the old head at d = 0, c = 0 (a = 1),
  and every departure d from it is penalised: a warm start that is also the centre of the regulariser.
  The intercept change c is penalised too (a constant feature instead of sklearn's free intercept): a
  free intercept follows the class mix of the new labels (a bin sees mostly N), which cost the old
  domain 2-3 points in the validation runs. Folded back, the new head is `W = d + W_old a`,
  `b = c + b_old a`, still one Gemm.
- `rehearsal+prior`: both (the default when the model ships a rehearsal set, else `prior`).
- `labels-only`: the new labels alone (forgets; for comparison).

Each rehearsal embedding counts as much as one labelled frame (`rehearsal_weight`), so a handful of labels
moves the head a little and hundreds move it more: trust grows with evidence.

Defaults (128 rehearsal embeddings per class, prior scale 1 with a rehearsal set and 10 without, C 0.316)
were chosen on a validation protocol that uses TRAIN only (`python benchmarks/adapt.py --select`): base head
on 80 % of the Kaggle TRAIN photos, old domain = the other 20 %, labels from one half of the web / TrashNet
TRAIN photos, shifted domain = the other half; TEST was not looked at.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from waste_edge.adapt.graph import AdaptError, HeadConstants
from waste_edge.adapt.options import METHODS
from waste_edge.runtime.rehearsal import RehearsalSet

DEFAULT_C = 0.316  # the study's; the prior's penalty is on the departure from the old head


@dataclass
class FitConfig:
    method: str = "auto"
    C: float = DEFAULT_C
    rehearsal_weight: float = 1.0  # weight of one rehearsal embedding relative to one labelled frame
    prior_scale: float | None = None  # old logits enter as features times this; None: 1 with a rehearsal set, 10 without
    penalise_intercept: bool = True  # with the prior: the intercept's change is penalised too (a constant feature)
    max_iter: int = 2000
    seed: int = 0


@dataclass
class FitResult:
    head: HeadConstants
    method: str
    counts: dict[str, int]  # new labels per class
    n_rehearsal: int
    seconds: float
    iterations: int
    new_accuracy_before: float  # old head on the new labels
    new_accuracy_after: float  # new head on the new labels (training accuracy)
    rehearsal_agreement: float | None  # new head vs old head on the rehearsal set (what was kept)
    settings: dict[str, Any] = field(default_factory=dict)


def resolve_method(method: str, have_rehearsal: bool) -> str:
    if method not in METHODS:
        raise AdaptError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    if method == "auto":
        return "rehearsal+prior" if have_rehearsal else "prior"
    if "rehearsal" in method and not have_rehearsal:
        raise AdaptError(f"method {method!r} needs a rehearsal set beside the model (<model>.rehearsal.npz) or --rehearsal PATH")
    return method


def fit_head(
    old: HeadConstants,
    classes: Sequence[str],
    x_new: np.ndarray,
    y_new: np.ndarray,
    rehearsal: RehearsalSet | None = None,
    config: FitConfig | None = None,
) -> FitResult:
    """A new head from `x_new` (the head's input features) with class indices `y_new`, protected as `config.method` says."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    cfg = config or FitConfig()
    t0 = time.perf_counter()
    method = resolve_method(cfg.method, rehearsal is not None)
    k = len(classes)
    x_new = np.asarray(x_new, np.float64)
    y_new = np.asarray(y_new, np.int64)
    if len(x_new) == 0:
        raise AdaptError("no labelled frames to learn from")
    if x_new.shape[1] != old.weight.shape[0]:
        raise AdaptError(f"features are {x_new.shape[1]}-d but the head expects {old.weight.shape[0]}-d")
    xs, ys, ws = [x_new], [y_new], [np.ones(len(y_new))]
    n_reh = 0
    if "rehearsal" in method and rehearsal is not None:
        n_reh = len(rehearsal.labels)
        xs.append(rehearsal.features.astype(np.float64))
        ys.append(rehearsal.labels)
        ws.append(np.full(n_reh, cfg.rehearsal_weight))
    x, y, w = np.vstack(xs), np.concatenate(ys), np.concatenate(ws)
    present = np.unique(y)
    if len(present) < k:
        missing = [classes[i] for i in range(k) if i not in present]
        hint = "" if "rehearsal" in method else " (a rehearsal set beside the model supplies every class)"
        raise AdaptError(f"no training example of class {', '.join(missing)}: label some, or use a rehearsal set{hint}")
    use_prior = "prior" in method
    scale = cfg.prior_scale if cfg.prior_scale is not None else (1.0 if n_reh else 10.0)
    feats = np.hstack([x, scale * old.logits(x)]) if use_prior else x
    pen_b = use_prior and cfg.penalise_intercept
    if pen_b:
        feats = np.hstack([feats, np.ones((len(feats), 1))])
    clf = LogisticRegression(C=cfg.C, max_iter=cfg.max_iter, random_state=cfg.seed, fit_intercept=not pen_b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported below as `iterations` == max_iter
        clf.fit(feats, y, sample_weight=w)
    coef = np.asarray(clf.coef_, np.float64).copy()
    intercept = np.asarray(clf.intercept_, np.float64) if not pen_b else coef[:, -1].copy()
    if pen_b:
        coef = coef[:, :-1]
    coef[:, x.shape[1]:] *= scale  # back to coefficients of the unscaled old logits
    head = _fold(coef, intercept, old, k, x.shape[1], use_prior)
    before = float((old.logits(x_new).argmax(1) == y_new).mean())
    after = float((head.logits(x_new).argmax(1) == y_new).mean())
    agreement = None
    if rehearsal is not None:
        agreement = float((head.logits(rehearsal.features).argmax(1) == old.logits(rehearsal.features).argmax(1)).mean())
    counts = {c: int((y_new == i).sum()) for i, c in enumerate(classes)}
    return FitResult(
        head, method, counts, n_reh, time.perf_counter() - t0, int(np.max(clf.n_iter_)), before, after, agreement,
        settings={"C": cfg.C, "rehearsal_weight": cfg.rehearsal_weight if n_reh else None,
                  "prior_scale": scale if use_prior else None, "penalise_intercept": pen_b, "solver": "lbfgs", "max_iter": cfg.max_iter},
    )


def _fold(coef: np.ndarray, intercept: np.ndarray, old: HeadConstants, k: int, d: int, prior: bool) -> HeadConstants:
    """sklearn's coefficients -> the fused graph's softmax weights [D, K] and bias [K].

    Two classes: sklearn fits one logit for class 1, and softmax([0, z]) == sigmoid(z). With the prior the
    extra columns are the coefficients `a` of the old logits, folded in as W_old @ a.
    """
    rows = np.asarray(coef, np.float64)  # [1 or K, D (+K)]
    bias = np.asarray(intercept, np.float64)
    direct, a = rows[:, :d], rows[:, d:]
    w = direct.T  # [D, R]
    b = bias.copy()
    if prior:
        w = w + old.weight.astype(np.float64) @ a.T
        b = b + a @ old.bias.astype(np.float64)
    if k == 2 and w.shape[1] == 1:
        w = np.hstack([np.zeros((d, 1)), w])
        b = np.concatenate([[0.0], b])
    return HeadConstants(w.astype(np.float32), b.astype(np.float32))
