"""Group-aware split: duplicates never straddle train/test, the CSV reads back through discover()."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from tests.data.planting import plant_copy, save_scene, scene
from waste_edge.data.check import check_dataset
from waste_edge.data.discovery import DatasetError, discover
from waste_edge.data.split_groups import SPLIT_COLUMNS, assign_groups, group_label, write_split


def test_group_label_majority_and_ties():
    assert group_label(["N", "B", "N"]) == "N"
    assert group_label(["N", "B"]) == "B"  # tie: alphabetical, independent of order
    assert group_label(["B", "N"]) == "B"


def test_assign_groups_is_stratified_and_deterministic():
    sizes = [1] * 80 + [3] * 10 + [1] * 40 + [5] * 2
    labels = ["B"] * 90 + ["N"] * 42
    out = assign_groups(sizes, labels, 0.25, seed=1)
    assert out == assign_groups(sizes, labels, 0.25, seed=1)
    assert out != assign_groups(sizes, labels, 0.25, seed=2)
    for lab, total in (("B", 110), ("N", 50)):
        test = sum(s for s, l, o in zip(sizes, labels, out) if l == lab and o == "test")
        assert test == round(total * 0.25)  # singletons fill the target exactly
    with pytest.raises(DatasetError):
        assign_groups([1], ["B"], 0.0, 0)


def test_assign_groups_tests_something_even_when_groups_are_big():
    out = assign_groups([10, 10, 10], ["B", "B", "B"], 0.1, 0)
    assert Counter(out) == {"train": 2, "test": 1}


def test_write_split_keeps_groups_together_and_reads_back(small_dataset, tmp_path):
    root, planted = small_dataset
    check = check_dataset(root, cache_dir=tmp_path / "cache", workers=1, progress=False)
    out = tmp_path / "splits" / "split.csv"
    result = write_split(check, out, test_size=0.3, seed=0)
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == SPLIT_COLUMNS
    assert {r["split"] for r in rows} == {"train", "test"}
    by_group: dict[str, set[str]] = {}
    for r in rows:
        by_group.setdefault(r["group"], set()).add(r["split"])
        assert Path(r["path"]).is_absolute()  # the data is not under the CSV's folder
    assert all(len(s) == 1 for s in by_group.values())  # no group spans both splits
    # the planted pairs and exact copies are in shared groups
    group_of = {(out.parent / r["path"]).resolve(): r["group"] for r in rows}
    for pl in planted:
        assert group_of[Path(pl.original).resolve()] == group_of[Path(pl.copy).resolve()]
    # unreadable files are left out, and said so
    assert {Path(p).name for p, _ in result.excluded} == {"empty.jpg", "empty too.jpg", "text.jpg", "truncated.jpg"}
    assert len(rows) == len(check.files) - 4
    # discover() reads the file back with the same splits and labels
    ds = discover(out)
    got = {s.path.resolve(): (s.label, s.split) for s in ds.samples}
    assert got == {(out.parent / r["path"]).resolve(): (r["label"], r["split"]) for r in rows}
    assert all(p.is_file() for p in got)
    assert "groups hold duplicates" in result.summary()
    # a split file inside the dataset folder uses relative paths, and still reads back
    inside = write_split(check, root / "split.csv", test_size=0.3, seed=0)
    assert all(not Path(p).is_absolute() and not p.startswith("..") for p, *_ in inside.rows)
    assert {s.path.resolve(): s.split for s in discover(root / "split.csv").samples} == {
        p.resolve(): sp for p, (_, sp) in got.items()
    }


def test_split_fraction_on_many_groups(tmp_path):
    root = tmp_path / "d"
    for k in range(40):
        p = save_scene(scene(k, (64, 64)), root / ("B" if k % 2 else "N") / f"{k}.png")
        if k % 4 == 0:
            plant_copy(p, root / ("B" if k % 2 else "N") / f"{k} flipped.jpg", "hflip")
    check = check_dataset(root, use_cache=False, workers=1, progress=False)
    assert sum(len(g) == 2 for g in check.groups()) == 10
    res = write_split(check, tmp_path / "s.csv", test_size=0.25, seed=3)
    counts = res.counts()
    assert counts["test"]["B"] + counts["test"]["N"] == pytest.approx(50 * 0.25, abs=1)
    again = write_split(check, tmp_path / "s2.csv", test_size=0.25, seed=3)
    assert again.rows == res.rows  # deterministic for a seed
