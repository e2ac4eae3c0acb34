"""Inputs shared by the Ray tests: generated images (odd names and sizes, bad files) and a short video."""

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import save_image, synthetic_rgb


def make_predict_inputs(root: Path, n_images: int = 18) -> list[Path]:
    """Folders of images with awkward names and sizes, a corrupt and an empty file, a 6-frame video and a
    missing path: every kind of row `predict` writes."""
    for i in range(n_images):
        label = "B" if i % 2 else "N"
        name = f"{label.lower()} img ({i})_é.jpg" if i % 3 else f"{label}_{i}.png"
        save_image(root / "in" / label / name, synthetic_rgb(label, i, size=(48 + 3 * i, 40 + 2 * i)), quality=90)
    (root / "in" / "N" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "in" / "B" / "empty.png").write_bytes(b"")
    video = root / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i, label in enumerate("BBNNBN"):
        writer.write(np.ascontiguousarray(synthetic_rgb(label, i)[..., ::-1]))
    writer.release()
    return [root / "in", video, root / "missing.jpg"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def assert_same_rows(got: list[dict], want: list[dict]) -> None:
    """Row for row: same paths, frames, labels and errors in the same order; probabilities within 1e-6."""
    assert len(got) == len(want)
    assert len({(r["path"], r["frame"]) for r in got}) == len(got)  # no duplicates
    for g, w in zip(got, want):
        for key in ("path", "frame", "label", "error"):
            assert g[key] == w[key], (key, g, w)
        for key in w:
            if key == "confidence" or key.startswith("p_"):
                assert (g[key] == w[key] == "") or abs(float(g[key]) - float(w[key])) <= 1e-6, (key, g, w)


@pytest.fixture(scope="module")
def predict_inputs(tmp_path_factory):
    return make_predict_inputs(tmp_path_factory.mktemp("scale-inputs"))
