"""Synthetic test images: fixtures are generated, never copied from ../shared (unknown licences)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
WASTE_SAMPLE = REPO.parent / "shared" / "data" / "waste-sample"

# Two visually separable synthetic "classes": warm organic blobs (B) vs cool smooth gradients (N).
CLASS_COLOURS = {"B": (150, 100, 40), "N": (60, 110, 190)}


def synthetic_rgb(label: str, seed: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """An HxWx3 uint8 RGB image whose colour and texture depend on `label`; `size` is (W, H)."""
    w, h = size
    rng = np.random.default_rng(seed)
    base = np.array(CLASS_COLOURS.get(label, (128, 128, 128)), dtype=np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    if label == "B":
        tex = 40 * np.sin(xx / (2 + seed % 3)) * np.cos(yy / (3 + seed % 2))
    else:
        tex = 60 * (xx / max(w - 1, 1)) - 30
    img = base[None, None, :] + tex[..., None] + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def save_image(path: Path, arr: np.ndarray, **save_kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **save_kwargs)
    return path


def make_kaggle_dataset(root: Path, n_per_class: int = 6, splits: tuple[str, ...] = ("TRAIN.1", "TRAIN.2", "TEST"), size=(64, 48)) -> Path:
    """A tiny dataset in the Kaggle layout with awkward file names (spaces, parentheses, unicode)."""
    seed = 0
    for split in splits:
        for label in ("B", "N"):
            for i in range(n_per_class):
                seed += 1
                name = f"{label.lower()} img ({i})_é.jpg" if i % 2 else f"{label}_{split}_{i}.png"
                save_image(root / split / label / name, synthetic_rgb(label, seed, size))
    return root


TINY_CLIP = "waste-tiny-ViT"
_TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1},
}


def register_tiny_clip() -> str:
    """A 2-layer ViT open_clip config (same preprocessing as ViT-B-32) so CLIP tests run in seconds."""
    import json
    import tempfile

    import open_clip

    if TINY_CLIP not in open_clip.list_models():
        folder = Path(tempfile.mkdtemp(prefix="waste-edge-clipcfg-"))
        (folder / f"{TINY_CLIP}.json").write_text(json.dumps(_TINY_CLIP_CFG))
        open_clip.add_model_config(folder)
    return TINY_CLIP
