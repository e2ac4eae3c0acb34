"""A train/test split without leakage: every duplicate group (exact or flip/rotation near copy) on one side.

Splitting image by image puts the mirror of a training photo into test. Here the unit of the split is the
duplicate group from `check.CheckResult.groups()`, and the split stays stratified: groups are dealt per class
(a group's class is its majority label), largest first in a seeded random order, into test while that keeps
the class's test count within its target, so the singletons at the end fill the target almost exactly.
No scikit-learn: the runtime's data package must stay light, and the greedy rule is easy to audit.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from waste_edge._io import atomic_write_text
from waste_edge.data.check import CheckResult
from waste_edge.data.discovery import DatasetError

SPLIT_COLUMNS = ("path", "label", "split", "group")


def group_label(labels: list[str]) -> str:
    """Majority label of a group; ties go to the alphabetically first so the answer never depends on order."""
    c = Counter(labels)
    top = max(c.values())
    return min(lab for lab, n in c.items() if n == top)


def assign_groups(group_sizes: list[int], group_labels: list[str], test_size: float, seed: int) -> list[str]:
    """'train' or 'test' per group, stratified by group label, deterministic for a given seed."""
    if not 0.0 < test_size < 1.0:
        raise DatasetError(f"test size must be between 0 and 1, got {test_size}")
    rng = np.random.default_rng(seed)
    out = ["train"] * len(group_sizes)
    by_class: dict[str, list[int]] = {}
    for g, lab in enumerate(group_labels):
        by_class.setdefault(lab, []).append(g)
    for lab in sorted(by_class):
        gs = [by_class[lab][k] for k in rng.permutation(len(by_class[lab]))]
        gs.sort(key=lambda g: -group_sizes[g])  # stable: random order among equal sizes
        total = sum(group_sizes[g] for g in gs)
        target = int(round(total * test_size))
        taken = 0
        for g in gs:
            if taken + group_sizes[g] <= target:
                out[g] = "test"
                taken += group_sizes[g]
        if taken == 0 and len(gs) >= 2:  # every group larger than the target: still test something
            smallest = min(gs, key=lambda g: group_sizes[g])
            out[smallest] = "test"
    return out


@dataclass
class SplitResult:
    out: Path
    rows: list[tuple[str, str, str, int]]  # (path as written, label, split, group)
    excluded: list[tuple[str, str]] = field(default_factory=list)  # unreadable files left out, with reasons
    n_groups: int = 0
    merged_groups: int = 0  # groups of two or more files

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for _, label, split, _ in self.rows:
            out.setdefault(split, {}).setdefault(label, 0)
            out[split][label] += 1
        return out

    def summary(self) -> str:
        counts = self.counts()
        classes = sorted({c for row in counts.values() for c in row})
        lines = [
            f"wrote {self.out}: {len(self.rows)} files in {self.n_groups} groups "
            f"({self.merged_groups} groups hold duplicates and stay on one side)",
            f"{'split':<8}" + "".join(f"{c:>10}" for c in classes) + f"{'total':>10}",
        ]
        for split in ("train", "test"):
            row = counts.get(split, {})
            lines.append(f"{split:<8}" + "".join(f"{row.get(c, 0):>10}" for c in classes) + f"{sum(row.values()):>10}")
        if self.excluded:
            lines.append(f"left out {len(self.excluded)} unreadable files:")
            lines.extend(f"  {p}: {reason}" for p, reason in self.excluded[:10])
        return "\n".join(lines)


def _relative(path: str, base: Path) -> str:
    """Path as written in the CSV: relative when the file lies under the CSV's folder (the pair moves together),
    else absolute (a `../../..` chain breaks as soon as the CSV is copied elsewhere)."""
    absolute = Path(os.path.abspath(path))
    try:
        rel = Path(os.path.relpath(absolute, base))
    except ValueError:  # another drive on Windows
        return absolute.as_posix()
    return absolute.as_posix() if rel.parts[:1] == ("..",) else rel.as_posix()


def write_split(check: CheckResult, out: str | Path, *, test_size: float = 0.2, seed: int = 0) -> SplitResult:
    """Split the checked dataset by duplicate group and write `path,label,split,group` to `out`.

    Unreadable files are left out (a training run could not use them) and listed in the result."""
    out = Path(out)
    files = check.files
    groups = [[i for i in g if files[i].error is None] for g in check.groups()]
    groups = [g for g in groups if g]
    sizes = [len(g) for g in groups]
    labels = [group_label([files[i].label for i in g]) for g in groups]
    assigned = assign_groups(sizes, labels, test_size, seed)
    base = Path(os.path.abspath(out.parent))
    rows: list[tuple[str, str, str, int]] = []
    for gid, (g, split) in enumerate(zip(groups, assigned)):
        rows += [(_relative(files[i].path, base), files[i].label, split, gid) for i in g]
    rows.sort(key=lambda r: (r[2] != "train", r[0]))
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(SPLIT_COLUMNS)
    w.writerows(rows)
    atomic_write_text(out, text.getvalue())
    excluded = [(f.path, f.error or "") for f in files if f.error is not None]
    return SplitResult(out, rows, excluded, len(groups), sum(s > 1 for s in sizes))
