"""The images fine-tuning sees: a validation split carved from TRAIN, and every photo decoded once.

Validation chooses the checkpoint and stops training, so it must never be TEST, and it must not share a photo
with what the network trains on: waste datasets hold mirrored / rotated copies (the Kaggle set was augmented
before it was split), and a copy on each side makes validation look better than the model is. The carve
therefore deals `data check`'s duplicate groups (exact and flip/rotation near copies), not files, stratified
by class (`data/split_groups.assign_groups`). A dataset with its own VAL split keeps it.

Photos are decoded and cropped once, with the encoder's `PreprocessSpec` on PIL (`train/preprocess.py`, the
reference the fused graph is bit-exact with), and held as uint8 crops: epochs then cost only augmentation and
the network, and what the network trains on is exactly what the edge will feed it.
"""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from waste_edge.data.decode import DecodeError, load_rgb
from waste_edge.data.discovery import Dataset, DatasetError, Sample, stratified_split
from waste_edge.train.preprocess import PreprocessSpec, resize_crop

Log = Callable[[str], None]


@dataclass
class ValidationSplit:
    fit: list[Sample]  # what the network trains on
    val: list[Sample]  # what chooses the checkpoint
    method: str  # how the split was made, for the card
    linked_groups: int = 0  # duplicate groups of two or more files kept on one side


def carve_validation(ds: Dataset, train: list[Sample], val_size: float, seed: int, *, test_size: float = 0.2,
                     progress: bool = True, hash_cache: Path | None = None, log: Log = print) -> ValidationSplit:
    """The dataset's VAL split if it has one, else `val_size` of TRAIN by duplicate group (stratified, seeded).

    `test_size` and `seed` must be the ones `ds` was discovered with (plain class folders are split by them)."""
    own = ds.split("val")
    if own:
        return ValidationSplit(train, own, "the dataset's VAL split")
    if not 0.0 < val_size < 1.0:
        raise DatasetError(f"--val-size must be between 0 and 1, got {val_size}")
    if importlib.util.find_spec("imagehash") is None:
        log("warning: imagehash is not installed (pip install 'waste-edge[data]'): validation is split by file, so "
            "near-duplicate photos may sit on both sides")
        assigned = stratified_split([s.label for s in train], val_size, seed)
        return _split(train, assigned, "stratified by file (imagehash missing: near duplicates not grouped)", 0)
    from waste_edge.data.check import check_dataset
    from waste_edge.data.split_groups import assign_groups, group_label

    check = check_dataset(ds.root, progress=progress, cache_dir=hash_cache, test_size=test_size, seed=seed)
    index = {str(s.path): i for i, s in enumerate(train)}
    groups = []
    for g in check.groups():
        members = [index[check.files[k].path] for k in g if check.files[k].path in index]
        if members:
            groups.append(members)
    grouped = {i for g in groups for i in g}
    groups += [[i] for i in range(len(train)) if i not in grouped]  # files the check could not hash stay single
    sides = assign_groups([len(g) for g in groups], [group_label([train[i].label for i in g]) for g in groups], val_size, seed)
    assigned = ["train"] * len(train)
    for g, side in zip(groups, sides):
        for i in g:
            assigned[i] = side
    linked = sum(len(g) > 1 for g in groups)
    return _split(train, assigned, f"{val_size:.0%} of TRAIN by duplicate group (data check), stratified, seed {seed}", linked)


def _split(train: list[Sample], assigned: list[str], method: str, linked: int) -> ValidationSplit:
    fit = [s for s, a in zip(train, assigned) if a == "train"]
    val = [s for s, a in zip(train, assigned) if a == "test"]
    if not fit or not val:
        raise DatasetError(f"too few training images ({len(train)}) to carve a validation split from")
    return ValidationSplit(fit, val, method, linked)


@dataclass
class Crops:
    """Decoded, cropped photos of one split: what the edge's preprocessing makes of them, before normalisation."""

    images: np.ndarray  # [N, S, S, 3] uint8 RGB
    labels: np.ndarray  # [N] int64 index into the classes
    samples: list[Sample]
    failed: list[tuple[Sample, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)


def decode_crops(samples: list[Sample], spec: PreprocessSpec, classes: list[str], *, workers: int = 2,
                 progress: bool = True, desc: str = "decoding") -> Crops:
    """Every readable sample through `spec` on PIL; unreadable ones are returned in `failed` with the reason."""

    def one(s: Sample) -> np.ndarray | str:
        try:
            return np.asarray(resize_crop(load_rgb(s.path), spec), dtype=np.uint8)
        except DecodeError as e:
            return str(e)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # PIL releases the GIL while decoding
        results = list(tqdm(pool.map(one, samples), total=len(samples), desc=desc, unit="img", disable=not progress, leave=False))
    ok = [(s, r) for s, r in zip(samples, results) if not isinstance(r, str)]
    failed = [(s, r) for s, r in zip(samples, results) if isinstance(r, str)]
    size = spec.size
    images = np.stack([r for _, r in ok]) if ok else np.zeros((0, size, size, 3), np.uint8)
    labels = np.array([classes.index(s.label) for s, _ in ok], dtype=np.int64)
    return Crops(images, labels, [s for s, _ in ok], failed)
