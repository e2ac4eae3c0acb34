"""Fixtures for export tests: tiny run directories (random-weight encoders, heads fitted on synthetic images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import save_image, synthetic_rgb

TINY_CLIP = "waste-edge-tiny-vit"
# A 2-layer ViT with the ViT-B/32 geometry (224 px, patch 32): fast, yet the same graph structure.
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
# (W, H): odd sizes, landscape and portrait, down- and upscaling, one tall enough for Pillow's vertical-first pass.
SIZES = [(301, 199), (64, 48), (200, 200), (100, 150), (320, 240), (120, 260), (257, 255), (90, 91)]


def register_tiny_clip() -> str:
    import open_clip.factory

    open_clip.factory._MODEL_CONFIGS.setdefault(TINY_CLIP, TINY_CLIP_CONFIG)
    return f"clip:{TINY_CLIP}/none"


def synthetic_images(root: Path, n_per_class: int = 4, seed0: int = 100) -> Path:
    """Class folders B/ and N/ of PNGs in varied sizes (noise added so resizing rounds differently everywhere)."""
    i = 0
    for label in ("B", "N"):
        for j in range(n_per_class):
            w, h = SIZES[i % len(SIZES)]
            rgb = synthetic_rgb(label, seed0 + i, (w, h)).astype(int)
            rgb += np.random.default_rng(i).integers(-40, 40, rgb.shape)
            save_image(root / label / f"{label}_{j}.png", np.clip(rgb, 0, 255).astype(np.uint8))
            i += 1
    return root


def make_run(run_dir: Path, encoder_id: str, images: Path, *, l2: bool = False) -> Path:
    """A real run directory (ARCHITECTURE.md, contract 1): features from the reference pipeline, a fitted head, card + head."""
    import torch

    from waste_edge.data.decode import load_rgb
    from waste_edge.data.labels import display_names
    from waste_edge.train.encoders import create_encoder
    from waste_edge.train.head import fit_head
    from waste_edge.train.preprocess import reference_preprocess
    from waste_edge.train.runs import LinearRun

    enc = create_encoder(encoder_id)
    paths = sorted(images.rglob("*.png"))
    tensors = []
    for p in paths:
        img = load_rgb(p)
        t = enc.reference_transform(img) if enc.reference_transform is not None else torch.from_numpy(reference_preprocess(img, enc.spec))
        tensors.append(t)
    with torch.no_grad():
        feats = enc.module(torch.stack(tensors)).numpy()
    labels = [p.parent.name for p in paths]
    head = fit_head(feats, labels, l2_normalize=l2, C=100.0)
    LinearRun.create(run_dir, enc.card(), head, display_names(head.classes))
    return run_dir


@pytest.fixture(scope="session")
def export_images(tmp_path_factory) -> Path:
    return synthetic_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def clip_run(tmp_path_factory, export_images) -> Path:
    return make_run(tmp_path_factory.mktemp("run") / "clip", register_tiny_clip(), export_images)


@pytest.fixture(scope="session")
def lite0_run(tmp_path_factory, export_images) -> Path:
    # Random Lite0 features are tiny (~1e-8): L2 normalisation gives the head something to work with.
    return make_run(tmp_path_factory.mktemp("run") / "lite0", "effnet-lite0/none", export_images, l2=True)


@pytest.fixture(scope="session")
def clip_onnx(tmp_path_factory, clip_run) -> Path:
    from waste_edge.export.exporter import export

    return export(clip_run, "onnx", out=tmp_path_factory.mktemp("m") / "clip.onnx", dynamic=True, progress=False).path


@pytest.fixture(scope="session")
def lite0_onnx(tmp_path_factory, lite0_run) -> Path:
    from waste_edge.export.exporter import export

    return export(lite0_run, "onnx", out=tmp_path_factory.mktemp("m") / "lite0.onnx", dynamic=True, progress=False).path


@pytest.fixture(scope="session")
def clip_fp16(tmp_path_factory, clip_run):
    """The tiny ViT (ViT-B/32 geometry) exported as fp16: the variant ONNX Runtime's NchwcTransformer crashes on."""
    from waste_edge.export.exporter import export

    return export(clip_run, "onnx", out=tmp_path_factory.mktemp("m") / "clip-fp16.onnx", half=True, dynamic=True, progress=False)


@pytest.fixture(scope="session")
def fixed_onnx(tmp_path_factory, clip_run, lite0_run) -> dict[str, Path]:
    """Both runs exported in the fixed-size form for 640x480 frames (shared by the lint and portability tests)."""
    from waste_edge.export.exporter import export

    out = tmp_path_factory.mktemp("fixed")
    return {name: export(run, "onnx", out=out / f"{name}.onnx", imgsz=(480, 640), progress=False).path
            for name, run in (("clip", clip_run), ("lite0", lite0_run))}
