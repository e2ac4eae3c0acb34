"""Fixtures of the data tests: a small generated dataset with planted copies, bad files and Kaggle names."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from tests.data.planting import plant_copy, save_scene as _save, scene


@pytest.fixture()
def small_dataset(tmp_path):
    """TRAIN/TEST x B/N of distinct scenes with planted copies, bad files, an exact copy and Kaggle-style names."""
    root = tmp_path / "data"
    files = {}
    for k in range(16):
        split, label = ("TRAIN" if k < 12 else "TEST"), ("B" if k % 2 else "N")
        files[k] = _save(scene(k), root / split / label / f"img {k} (x).jpg", quality=92)
    planted = [
        plant_copy(files[0], root / "TEST" / "N" / "mirror of 0.jpg", "hflip"),
        plant_copy(files[3], root / "TEST" / "B" / "rot of 3.jpg", "rot90", resize=0.9),
        plant_copy(files[5], root / "TEST" / "N" / "conflict 5.png", "transverse", fmt="PNG"),  # other label
        plant_copy(files[6], root / "TRAIN" / "N" / "same split 6.jpg", "vflip", resize=1.1),
    ]
    shutil.copy(files[7], root / "TEST" / "B" / "exact 7.jpg")
    shutil.copy(files[8], root / "TRAIN" / "N" / "exact 8 again.jpg")
    (root / "TRAIN" / "B" / "empty.jpg").write_bytes(b"")
    (root / "TRAIN" / "N" / "empty too.jpg").write_bytes(b"")
    (root / "TEST" / "B" / "text.jpg").write_text("not an image")
    data = (root / "TRAIN" / "B" / "img 1 (x).jpg").read_bytes()
    (root / "TEST" / "N" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    _save(scene(1).transpose(Image.Transpose.FLIP_LEFT_RIGHT), root / "TEST" / "B" / "TEST_BIODEG_HFL_1.jpg", quality=90)
    shutil.copy(files[1], root / "TRAIN" / "B" / "TRAIN.1_BIODEG_ORI_1.jpg")
    _save(scene(40), root / "TEST" / "B" / "TEST_BIODEG_VFL_2.jpg")
    _save(scene(41), root / "TRAIN" / "B" / "TRAIN.2_BIODEG_ORI_2.jpg")
    return root, planted


@pytest.fixture()
def waste_sample_optional():
    from tests.helpers import WASTE_SAMPLE

    return WASTE_SAMPLE if (WASTE_SAMPLE / "labels.csv").is_file() else None
