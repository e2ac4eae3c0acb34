"""Does a loaded model answer like a classifier? A probe before it serves (or is written by `export`).

A fused model can load cleanly and still be useless: a head with overflowing weights answers NaN for every
frame, a graph edited by hand may answer a vector that is not a distribution. Such a model must never label a
frame (NaN compared with anything is False, so `argmax` of NaNs picks class 0 and calls it "B"), so every
model is asked about a few synthetic frames first: the answer must be one row per frame, one column per class
of the metadata, finite, each value in [0, 1], each row summing to 1. At run time the same rule holds per call
(`Classifier` raises `NonFiniteOutputError`), so a model that goes wrong only on some frames gives error rows,
never labels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from waste_edge.errors import WasteEdgeError

if TYPE_CHECKING:
    from waste_edge.runtime.classifier import Classifier

SUM_TOLERANCE = 1e-3  # float32 softmax rows sum to 1 within ~1e-6; fp16 graphs within ~1e-3
PROBE_SIDE = 64  # frame side for models that take any size (their own graph resizes it)


class ModelCheckError(WasteEdgeError):
    """A model that loads but does not answer a probe frame with a probability distribution over its classes."""


class ProbeRunError(ModelCheckError):
    """The probe frames did not even run (the graph fails here, e.g. an fp16 graph on a CPU provider)."""


def probe_frames(clf: "Classifier") -> np.ndarray:
    """Three frames in the model's input size: mid grey, a gradient, seeded noise (what any image may look like)."""
    h, w = clf.input_size or (PROBE_SIDE, PROBE_SIDE)
    grey = np.full((h, w, 3), 128, np.uint8)
    ramp = np.broadcast_to(np.linspace(0, 255, w, dtype=np.float32)[None, :, None], (h, w, 3)).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return np.stack([grey, ramp, noise])


def check_probabilities(probs: np.ndarray, n_classes: int, where: str) -> None:
    """Raise `ModelCheckError` unless `probs` is [N, n_classes] of finite values in [0, 1] with rows summing to 1."""
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] != n_classes:
        raise ModelCheckError(f"{where}: probabilities have shape {list(probs.shape)}, expected [N, {n_classes}] (one column per class of the metadata)")
    if not np.isfinite(probs).all():
        raise ModelCheckError(f"{where}: the model answers non-finite probabilities ({_show(probs)})")
    if probs.min() < -1e-6 or probs.max() > 1 + 1e-6:
        raise ModelCheckError(f"{where}: probabilities outside [0, 1] ({_show(probs)})")
    sums = probs.sum(axis=1, dtype=np.float64)
    if np.abs(sums - 1.0).max() > SUM_TOLERANCE:
        raise ModelCheckError(f"{where}: probabilities do not sum to 1 (row sums {', '.join(f'{s:.4g}' for s in sums[:3])})")


def probe_classifier(clf: "Classifier", name: str | None = None) -> None:
    """Run the probe frames through `clf` (one call, then one frame alone, as a camera would); `ModelCheckError`
    saying what is wrong (`ProbeRunError` when the graph does not run at all). `name`: the model's name in messages."""
    from waste_edge.runtime.classifier import NonFiniteOutputError

    where = f"{name or clf.path.name} refused"
    frames = probe_frames(clf)
    try:
        batch = clf.predict_proba(list(frames), clf.channel_order)
        single = clf.predict_proba(frames[0], clf.channel_order)
    except NonFiniteOutputError:
        raise ModelCheckError(f"{where}: it answers non-finite probabilities (NaN or inf) to probe frames") from None
    except Exception as e:  # an ONNX Runtime failure inside the graph: the model's fault, said in one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ProbeRunError(f"{where}: a probe frame does not run: {msg}") from None
    check_probabilities(batch, len(clf.classes), where)
    check_probabilities(single, len(clf.classes), where)


def _show(probs: np.ndarray) -> str:
    row = probs.reshape(-1)[:4]
    return "[" + ", ".join(f"{v:.4g}" for v in row) + (", ..." if probs.size > 4 else "") + "]"
