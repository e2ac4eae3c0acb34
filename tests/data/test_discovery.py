"""waste_edge.data.discovery: every layout users have, and the rows it cannot use."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import make_kaggle_dataset, save_image, synthetic_rgb
from waste_edge.data.discovery import DatasetError, discover, normalise_split, stratified_split


def _folders(root: Path, n: dict[str, int]) -> Path:
    for label, count in n.items():
        for i in range(count):
            save_image(root / label / f"{label}_{i}.png", synthetic_rgb(label, i, (8, 8)))
    return root


def test_kaggle_layout_train_parts_and_test(tmp_path):
    root = make_kaggle_dataset(tmp_path / "kaggle", n_per_class=3)
    ds = discover(root)
    assert ds.layout == "kaggle" and ds.classes == ["B", "N"]
    assert ds.counts() == {"train": {"B": 6, "N": 6}, "test": {"B": 3, "N": 3}}
    assert {s.source for s in ds.split("train")} == {"TRAIN.1", "TRAIN.2"}
    assert {s.source for s in ds.split("test")} == {"TEST"}
    assert len(ds.split("all")) == 18
    # awkward names survive discovery untouched
    assert any("(1)_é" in s.path.name for s in ds.samples)
    assert all(s.path.is_file() for s in ds.samples)
    assert ds.problems == []


def test_train_val_test_layout(tmp_path):
    root = make_kaggle_dataset(tmp_path / "tvt", n_per_class=2, splits=("TRAIN", "VAL", "TEST"))
    ds = discover(root)
    assert ds.counts() == {"train": {"B": 2, "N": 2}, "val": {"B": 2, "N": 2}, "test": {"B": 2, "N": 2}}
    assert len(ds.split("validation")) == 4


def test_lower_case_and_alias_split_folders(tmp_path):
    root = make_kaggle_dataset(tmp_path / "lc", n_per_class=1, splits=("training", "valid", "testing"))
    assert set(discover(root).counts()) == {"train", "val", "test"}


def test_kaggle_layout_reports_strays_and_foreign_folders(tmp_path):
    root = make_kaggle_dataset(tmp_path / "k", n_per_class=2, splits=("TRAIN", "TEST"))
    (root / "TRAIN" / "loose.jpg").write_bytes(b"x")
    save_image(root / "extras" / "B" / "lost.png", synthetic_rgb("B", 1, (8, 8)))
    (root / ".hidden").mkdir()
    (root / "TRAIN" / "B" / ".DS_Store").write_bytes(b"x")
    ds = discover(root)
    reasons = dict(ds.problems)
    assert "no label" in reasons[str(root / "TRAIN" / "loose.jpg")]
    assert "not a split" in reasons[str(root / "extras")]  # its files are not dropped silently
    assert len(ds.problems) == 2
    assert not any(".DS_Store" in str(s.path) for s in ds.samples)


def test_non_image_files_are_kept_for_the_decoder_to_report(tmp_path):
    root = make_kaggle_dataset(tmp_path / "k", n_per_class=1, splits=("TRAIN", "TEST"))
    (root / "TRAIN" / "B" / "notes.txt").write_text("hello")
    ds = discover(root)
    assert any(s.path.name == "notes.txt" for s in ds.samples)


def test_plain_class_folders_split_is_seeded_stratified_and_deterministic(tmp_path):
    root = _folders(tmp_path / "plain", {"B": 20, "N": 10})
    ds = discover(root, test_size=0.2, seed=3)
    assert ds.layout == "folders"
    assert ds.counts() == {"train": {"B": 16, "N": 8}, "test": {"B": 4, "N": 2}}
    again = discover(root, test_size=0.2, seed=3)
    assert [(s.path, s.split) for s in again.samples] == [(s.path, s.split) for s in ds.samples]
    other = discover(root, test_size=0.2, seed=4)
    assert {s.path for s in other.split("test")} != {s.path for s in ds.split("test")}
    assert discover(root, test_size=0.5, seed=3).counts()["test"] == {"B": 10, "N": 5}


def test_stratified_split_edge_cases():
    assert stratified_split(["B"], 0.2, 0) == ["train"]  # a single sample cannot be tested
    out = stratified_split(["B", "B", "N", "N"], 0.1, 0)  # rounds to 0, but each class gets one test sample
    assert Counter(out) == {"train": 2, "test": 2}
    with pytest.raises(DatasetError):
        stratified_split(["B", "N"], 1.0, 0)


def test_csv_manifest_relative_absolute_and_bad_rows(tmp_path):
    img_dir = tmp_path / "imgs"
    a = save_image(img_dir / "a b (1).png", synthetic_rgb("B", 1, (8, 8)))
    b = save_image(img_dir / "ü.png", synthetic_rgb("N", 2, (8, 8)))
    c = save_image(tmp_path / "elsewhere" / "c.png", synthetic_rgb("N", 3, (8, 8)))
    manifest = tmp_path / "sets" / "m.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "path,label,split\n"
        "../imgs/a b (1).png,B,train\n"
        f"{c},N,TEST\n"
        "../imgs/ü.png,N,Training\n"
        ",B,train\n"
        "../imgs/x.png,,test\n"
        "../imgs/y.png,B,holdout\n",
        encoding="utf-8",
    )
    ds = discover(manifest)
    assert ds.layout == "csv"
    got = {s.path.resolve(): s.split for s in ds.samples}
    assert got == {a.resolve(): "train", c.resolve(): "test", b.resolve(): "train"}
    assert [item for item, _ in ds.problems] == ["m.csv:5", "m.csv:6", "m.csv:7"]
    assert "holdout" in ds.problems[2][1]


def test_csv_without_split_column_is_split_by_seed(tmp_path):
    rows = [f"img{i}.png,{'B' if i % 2 else 'N'}" for i in range(20)]
    m = tmp_path / "m.csv"
    m.write_text("\ufeffPath, Label\n" + "\n".join(rows) + "\n", encoding="utf-8")  # BOM, odd header spacing
    ds = discover(m, test_size=0.2, seed=1)
    assert ds.counts() == {"train": {"B": 8, "N": 8}, "test": {"B": 2, "N": 2}}
    assert [s.split for s in discover(m, test_size=0.2, seed=1).samples] == [s.split for s in ds.samples]


def test_csv_errors(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text("file,class\na.png,B\n")
    with pytest.raises(DatasetError, match="'path' and 'label'"):
        discover(m)
    m.write_text("path,label,split\na.png,B,train\nb.png,N,\n")
    with pytest.raises(DatasetError, match="filled for some rows"):
        discover(m)
    m.write_bytes("path,label\nimg\xe9.png,B\nb.png,N\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="UTF-8"):
        discover(m)


def test_discover_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        discover(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="not a CSV"):
        discover(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no labelled images"):
        discover(tmp_path / "empty")
    one = _folders(tmp_path / "one", {"B": 3})
    with pytest.raises(DatasetError, match="only one class"):
        discover(one)


def test_normalise_split():
    assert normalise_split("TRAIN.2") == "train"
    assert normalise_split(" Validation ") == "val"
    assert normalise_split("test_1") == "test"
    assert normalise_split("all") == "all"
    with pytest.raises(DatasetError):
        normalise_split("holdout")


def test_waste_sample_counts(waste_sample):
    ds = discover(waste_sample)
    assert ds.counts() == {"train": {"B": 830, "N": 819}, "test": {"B": 207, "N": 205}}
