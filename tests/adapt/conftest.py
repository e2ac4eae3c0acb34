"""Fixtures for adapt tests: a tiny fused model with an `embedding` output, a collection folder, a rehearsal set.

The tiny model (tests/runtime/tiny_model.py) has the fused graph's head shape: features `embedding` (here the
mean colour of the frame, 3-d) -> Gemm -> Softmax, so adapt runs on it exactly as on an exported model, in
milliseconds and without torch. Its old head calls reddish frames B and bluish frames N.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import save_image
from tests.runtime.tiny_model import make_fused_model
from waste_edge.runtime.rehearsal import build_rehearsal_set, rehearsal_path, save_rehearsal
from waste_edge.runtime.collection import write_labels


def solid(rgb: tuple[int, int, int], seed: int, size=(64, 48)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.array(rgb, float)[None, None, :] + rng.normal(0, 8, (size[1], size[0], 3))
    return np.clip(img, 0, 255).astype(np.uint8)


# The old domain: red-ish = B, blue-ish = N. The new bin: green glass that is a little more red than blue, which
# the old head calls B at ~0.7 (an uncertain frame), is N; yellow peel stays B. A linear head can learn both
# (green separates the glass), so a refit that keeps the old knowledge gets everything right.
OLD_B, OLD_N = (200, 60, 60), (60, 60, 200)
NEW_N, NEW_B = (100, 190, 70), (180, 170, 60)


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    return make_fused_model(tmp_path / "models" / "tiny.onnx", channel_order="BGR", with_embedding=True)


@pytest.fixture
def collection(tmp_path) -> Path:
    """A collection folder of RGB PNG/JPEG frames of the new bin, 12 labelled (6 N, 6 B), 2 unlabelled."""
    folder = tmp_path / "collected"
    labels = {}
    for i in range(6):
        labels[save_image(folder / f"2025-n-{i}.png", solid(NEW_N, i)).name] = "N"
        labels[save_image(folder / f"2025-b-{i}.jpg", solid(NEW_B, 100 + i), quality=95).name] = "B"
    save_image(folder / "2025-x-0.png", solid(NEW_N, 50))
    save_image(folder / "2025-x-1.png", solid(NEW_B, 51))
    write_labels(folder, labels)
    return folder


def old_domain(n: int = 40, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Mean-colour features (what the tiny BGR model's `embedding` is: B, G, R means) of old-domain frames, and their labels."""
    feats = [solid(OLD_B if i % 2 == 0 else OLD_N, seed + i)[..., ::-1].reshape(-1, 3).mean(0) for i in range(n)]
    return np.array(feats, np.float32), ["B" if i % 2 == 0 else "N" for i in range(n)]


@pytest.fixture
def with_rehearsal(tiny_model) -> Path:
    feats, labels = old_domain()
    save_rehearsal(build_rehearsal_set(feats, labels, classes=["B", "N"], encoder="test:mean-colour", per_class=16), rehearsal_path(tiny_model))
    return tiny_model
