"""Dataset discovery: one list of labelled samples from any of the three layouts users have.

(a) Kaggle layout: split folders (`TRAIN.1`, `TRAIN.2`, ..., `TEST`, or `TRAIN`/`VAL`/`TEST`), each with
    one folder per class (`B`, `N`);
(b) a plain root of class folders, split deterministically and stratified by `seed`;
(c) a CSV manifest with `path,label` (and optionally `split`) columns; relative paths are resolved
    against the CSV's folder. A data-check split file is such a manifest.

Discovery never opens images (decoding is `waste_edge.data.decode`'s job, at use time) and never drops a
row silently: rows it cannot use are kept in `Dataset.problems` with the reason.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from waste_edge._io import list_files, special_kind
from waste_edge.errors import WasteEdgeError

SPLITS = ("train", "val", "test")
_SPLIT_DIR = re.compile(r"^(train|training|val|valid|validation|test|testing)(?:[._\- ]?\d+)?$", re.IGNORECASE)
_SPLIT_ALIASES = {"training": "train", "valid": "val", "validation": "val", "testing": "test"}


class DatasetError(WasteEdgeError):
    """The dataset cannot be used at all (missing folder, no classes, malformed manifest header)."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    split: str  # one of SPLITS
    source: str = ""  # the split folder or manifest it came from (e.g. "TRAIN.2"), for reports


@dataclass
class Dataset:
    root: Path
    layout: str  # "kaggle" | "folders" | "csv"
    samples: list[Sample]
    classes: list[str]
    problems: list[tuple[str, str]] = field(default_factory=list)  # (row or path, reason)

    def split(self, name: str) -> list[Sample]:
        """Samples of one split; `all` returns every sample."""
        key = normalise_split(name)
        if key == "all":
            return list(self.samples)
        return [s for s in self.samples if s.split == key]

    def require(self, name: str) -> list[Sample]:
        """Samples of one split, or a `DatasetError` naming the splits there are."""
        samples = self.split(name)
        if not samples:
            raise DatasetError(f"{self.root}: no {name} images (splits found: {', '.join(self.counts()) or 'none'})")
        return samples

    def summary(self) -> str:
        return f"dataset {self.root} ({self.layout} layout): " + ", ".join(f"{sp} {sum(c.values())}" for sp, c in self.counts().items())

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            c = Counter(s.label for s in self.samples if s.split == split)
            if c:
                out[split] = {k: c.get(k, 0) for k in self.classes}
        return out


def normalise_split(name: str) -> str:
    key = name.strip().lower()
    key = re.sub(r"[._\- ]?\d+$", "", key) if _SPLIT_DIR.match(key) else key
    key = _SPLIT_ALIASES.get(key, key)
    if key not in SPLITS and key != "all":
        raise DatasetError(f"unknown split {name!r}: use one of train, val, test or all")
    return key


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def stratified_split(labels: list[str], test_size: float, seed: int) -> list[str]:
    """Deterministic per-class split: the same files, seed and fraction always give the same answer."""
    if not 0.0 < test_size < 1.0:
        raise DatasetError(f"test size must be between 0 and 1, got {test_size}")
    rng = np.random.default_rng(seed)
    out = ["train"] * len(labels)
    by_class: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_class.setdefault(lab, []).append(i)
    for lab in sorted(by_class):
        idx = by_class[lab]
        n_test = int(round(len(idx) * test_size))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        for i in rng.permutation(idx)[:n_test]:
            out[int(i)] = "test"
    return out


def _discover_kaggle(root: Path, split_dirs: list[Path]) -> Dataset:
    samples: list[Sample] = []
    classes: set[str] = set()
    problems: list[tuple[str, str]] = []
    for sd in split_dirs:
        split = normalise_split(sd.name)
        for cd in _class_dirs(sd):
            classes.add(cd.name)
            samples += [Sample(p, cd.name, split, sd.name) for p in list_files(cd)]  # every file: bad ones get reported
        for stray in (p for p in sd.iterdir() if p.is_file() and not p.name.startswith(".")):
            problems.append((str(stray), "file outside a class folder: no label"))
    for other in _class_dirs(root):
        if other not in split_dirs:
            problems.append((str(other), "folder beside the split folders is not a split (train*, val*, test*): ignored"))
    return Dataset(root, "kaggle", samples, sorted(classes), problems)


def _discover_folders(root: Path, test_size: float, seed: int) -> Dataset:
    pairs = [(p, cd.name) for cd in _class_dirs(root) for p in list_files(cd)]
    splits = stratified_split([lab for _, lab in pairs], test_size, seed) if pairs else []
    samples = [Sample(p, lab, sp, root.name) for (p, lab), sp in zip(pairs, splits)]
    problems = [(str(p), "file outside a class folder: no label") for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
    return Dataset(root, "folders", samples, sorted({lab for _, lab in pairs}), problems)


def _discover_csv(manifest: Path, test_size: float, seed: int) -> Dataset:
    base = manifest.parent
    try:
        return _read_csv(manifest, base, test_size, seed)
    except (UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{manifest}: not a readable UTF-8 CSV manifest ({e})") from None


def _read_csv(manifest: Path, base: Path, test_size: float, seed: int) -> Dataset:
    with manifest.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
        if "path" not in cols or "label" not in cols:
            raise DatasetError(f"{manifest}: a manifest needs a header with 'path' and 'label' columns (found {reader.fieldnames})")
        rows, problems = [], []
        for lineno, row in enumerate(reader, start=2):
            path, label = (row.get(cols["path"]) or "").strip(), (row.get(cols["label"]) or "").strip()
            split = (row.get(cols["split"]) or "").strip() if "split" in cols else ""
            if not path or not label:
                problems.append((f"{manifest.name}:{lineno}", "row without a path or a label"))
                continue
            if split:
                try:
                    split = normalise_split(split)
                    if split not in SPLITS:
                        raise DatasetError(f"unknown split {split!r}: use one of train, val, test")
                except DatasetError as e:
                    problems.append((f"{manifest.name}:{lineno}", str(e)))
                    continue
            p = Path(path)
            rows.append((p if p.is_absolute() else base / p, label, split))
    if any(not s for _, _, s in rows) and any(s for _, _, s in rows):
        raise DatasetError(f"{manifest}: the 'split' column is filled for some rows and empty for others")
    if rows and not rows[0][2]:
        assigned = stratified_split([lab for _, lab, _ in rows], test_size, seed)
    else:
        assigned = [s for _, _, s in rows]
    samples = [Sample(p, lab, sp, manifest.name) for (p, lab, _), sp in zip(rows, assigned)]
    return Dataset(manifest, "csv", samples, sorted({s.label for s in samples}), problems)


def discover(source: str | Path, *, test_size: float = 0.2, seed: int = 0) -> Dataset:
    """Find every labelled sample under `source` (a folder or a CSV manifest)."""
    root = Path(source)
    if not root.exists():
        raise DatasetError(f"dataset not found: {root}")
    if (kind := special_kind(root.stat().st_mode)) not in (None, "a folder"):
        raise DatasetError(f"{root}: not a folder or a CSV manifest ({kind})")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DatasetError(f"{root} is a file but not a CSV manifest (path,label[,split])")
        ds = _discover_csv(root, test_size, seed)
    else:
        split_dirs = [d for d in _class_dirs(root) if _SPLIT_DIR.match(d.name)]
        ds = _discover_kaggle(root, split_dirs) if split_dirs else _discover_folders(root, test_size, seed)
    if not ds.samples:
        raise DatasetError(
            f"no labelled images found in {root}: expected TRAIN*/TEST*/<class>/ folders, <class>/ folders, or a path,label CSV"
        )
    if len(ds.classes) < 2:
        raise DatasetError(f"{root}: found only one class ({ds.classes[0]}); a classifier needs at least two")
    return ds
