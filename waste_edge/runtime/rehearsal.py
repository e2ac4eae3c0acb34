"""The rehearsal set: a compact sample of the original training embeddings, shipped beside a model.

Written by `export --with-embedding` (export/rehearsal.py samples the run's training images) and read by
`adapt`, on the device: so it lives in the runtime, numpy only.

A head refitted on a few dozen new labels alone forgets what it knew (on waste-sample: -20 to -40 points on
the old domain, benchmarks/adapt.py). Refitting on the new labels plus a few hundred embeddings of the
original training images keeps the old decision boundary where it was while the new labels move it
where the new camera needs it. Stored as `<model stem>.rehearsal.npz` beside the model (`default.onnx` ->
`default.rehearsal.npz`): plain arrays, `allow_pickle=False`, features in float16 (half the size; the
rounding, ~1e-3 relative, is far below what a logistic fit notices).

The features are the head's input exactly as the `embedding` output of a `--with-embedding` model gives it
(after the head's normalisation), taken from the training run's embeddings (the reference encoder); the
set records the encoder, dimension and normalisation, and `adapt` refuses a set that does not match.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from waste_edge._io import atomic_write_bytes
from waste_edge.errors import WasteEdgeError

REHEARSAL_FORMAT = "waste-edge/rehearsal-set"
REHEARSAL_VERSION = 1
SUFFIX = ".rehearsal.npz"
DEFAULT_PER_CLASS = 128


class RehearsalError(WasteEdgeError):
    """A rehearsal set that is missing, unreadable, or made for another model."""


@dataclass
class RehearsalSet:
    features: np.ndarray  # [n, D] float32 (stored float16), the head's input
    labels: np.ndarray  # [n] int, index into `classes`
    classes: list[str]
    encoder: str
    normalization: str  # "none" | "l2", as ModelMetadata.embedding["normalization"]
    info: dict[str, Any] = field(default_factory=dict)  # selection method, sizes, source fingerprint, ...

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def counts(self) -> dict[str, int]:
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}

    def check_matches(self, encoder: str, dim: int, normalization: str, classes: Sequence[str], where: str = "") -> None:
        """RehearsalError unless this set was made for a model with this encoder, feature size and classes."""
        problems = []
        if self.encoder != encoder:
            problems.append(f"encoder {self.encoder} (the model's is {encoder})")
        if self.dim != dim:
            problems.append(f"{self.dim}-d features (the model's are {dim}-d)")
        if self.normalization != normalization:
            problems.append(f"normalisation {self.normalization} (the model's is {normalization})")
        if list(self.classes) != list(classes):
            problems.append(f"classes {self.classes} (the model's are {list(classes)})")
        if problems:
            raise RehearsalError(f"rehearsal set {where or ''} does not fit this model: " + "; ".join(problems))


def rehearsal_path(model: str | Path) -> Path:
    """Where the rehearsal set of `model` lives: `x.onnx` -> `x.rehearsal.npz`."""
    p = Path(model)
    return p.with_name(p.stem + SUFFIX)


def select_rehearsal(labels: Sequence[Any], per_class: int = DEFAULT_PER_CLASS, seed: int = 0) -> np.ndarray:
    """Indices of a stratified random sample, `per_class` per class (all of a smaller class), sorted.

    Needs only the labels, so an exporter embeds just the sampled images, not a whole training set.

    Random, not k-means centroids or boundary points: the head is refitted with these as ordinary training
    points, and a uniform sample keeps each class's spread (and the boundary's support) in proportion.
    """
    lab = np.asarray([str(v) for v in labels])
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(lab == c), size=min(per_class, int((lab == c).sum())), replace=False) for c in np.unique(lab)]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def normalise(features: np.ndarray, normalization: str) -> np.ndarray:
    """The head's feature normalisation (what the fused graph applies before its Gemm)."""
    x = np.asarray(features, dtype=np.float64)
    if normalization == "l2":
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if normalization != "none":
        raise RehearsalError(f"unknown feature normalisation {normalization!r}")
    return x


def build_rehearsal_set(
    features: np.ndarray,
    labels: Sequence[str],
    *,
    classes: Sequence[str],
    encoder: str,
    normalization: str = "none",
    per_class: int = DEFAULT_PER_CLASS,
    seed: int = 0,
    source: dict[str, Any] | None = None,
    selected: bool = False,
) -> RehearsalSet:
    """A rehearsal set from a training run's embeddings (encoder outputs, before the head's normalisation).

    `selected=True`: the rows are already the sample (`select_rehearsal` on the labels, then embedded).
    """
    feats = np.asarray(features)
    lab = np.array([list(classes).index(str(y)) if str(y) in classes else -1 for y in labels])
    if feats.ndim != 2 or len(feats) != len(lab) or len(lab) == 0:
        raise RehearsalError(f"need an [n, D] feature array and n labels, got {feats.shape} and {len(lab)}")
    if (lab < 0).any():
        raise RehearsalError(f"labels {sorted({str(y) for y in labels} - set(classes))} are not classes {list(classes)}")
    idx = np.arange(len(lab)) if selected else select_rehearsal(lab, per_class, seed)
    x = normalise(feats[idx], normalization).astype(np.float32)
    info = {"selection": "stratified random", "per_class": per_class, "seed": seed, **({} if selected else {"from_n": int(len(lab))}), **(source or {})}
    return RehearsalSet(x, lab[idx].astype(np.int64), list(classes), encoder, normalization, info)


def save_rehearsal(rs: RehearsalSet, path: str | Path) -> Path:
    header = {"format": REHEARSAL_FORMAT, "version": REHEARSAL_VERSION, "classes": rs.classes, "encoder": rs.encoder,
              "normalization": rs.normalization, "dim": rs.dim, "n": int(len(rs.labels)), "info": rs.info}
    buf = io.BytesIO()
    np.savez_compressed(buf, header=np.array(json.dumps(header)), features=rs.features.astype(np.float16), labels=rs.labels.astype(np.int16))
    return atomic_write_bytes(path, buf.getvalue())


def load_rehearsal(path: str | Path) -> RehearsalSet:
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            feats = z["features"].astype(np.float32)
            labels = z["labels"].astype(np.int64)
    except FileNotFoundError:
        raise RehearsalError(f"{p}: no such rehearsal set") from None
    except (OSError, ValueError, KeyError) as e:
        raise RehearsalError(f"{p}: not a rehearsal set ({type(e).__name__}: {e})") from None
    if header.get("format") != REHEARSAL_FORMAT or int(header.get("version", 0)) > REHEARSAL_VERSION:
        raise RehearsalError(f"{p}: not a waste-edge rehearsal set (format {header.get('format')!r}, version {header.get('version')!r})")
    classes = list(header["classes"])
    if feats.ndim != 2 or len(feats) != len(labels) or labels.min(initial=0) < 0 or labels.max(initial=0) >= len(classes) or not np.isfinite(feats).all():
        raise RehearsalError(f"{p}: inconsistent rehearsal set (features {feats.shape}, labels {labels.shape})")
    return RehearsalSet(feats, labels, classes, str(header["encoder"]), str(header["normalization"]), dict(header.get("info", {})))
