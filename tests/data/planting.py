"""Fixture builders for the duplicate check: distinct generated scenes and planted flipped/rotated copies."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from waste_edge.data.decode import load_rgb
from waste_edge.data.perceptual_hash import _PIL_OPS, TRANSFORMS


def scene(seed: int, size: tuple[int, int] = (200, 200)) -> Image.Image:
    """A distinct synthetic photo: random background gradient plus random ellipses, boxes and lines."""
    rng = np.random.default_rng(10_000 + seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h + 1) / 2
    bg = c0[None, None, :] * (1 - ramp[..., None]) + c1[None, None, :] * ramp[..., None]
    img = Image.fromarray(np.clip(bg + rng.normal(0, 6, bg.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 9))):
        x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        x1, y1 = x0 + int(rng.integers(15, w // 2)), y0 + int(rng.integers(15, h // 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(3, 12)))
    return img


def save_scene(img: Image.Image, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


@dataclass(frozen=True)
class Planted:
    original: str  # path of the original file
    copy: str  # path of the planted copy
    transform: str  # copy ~ transform(original)
    resized: float
    fmt: str


def plant_copy(original: Path, out: Path, transform: str, *, resize: float = 1.0, fmt: str = "JPEG", quality: int = 60) -> Planted:
    """Write transform(original), optionally resized, re-encoded as JPEG `quality` (or PNG) to `out`."""
    img = load_rgb(original)
    op = _PIL_OPS[TRANSFORMS.index(transform)]
    if op is not None:
        img = img.transpose(op)
    if resize != 1.0:
        img = img.resize((max(8, round(img.width * resize)), max(8, round(img.height * resize))), Image.Resampling.BICUBIC)
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    out.write_bytes(buf.getvalue())
    return Planted(str(original), str(out), transform, resize, fmt)
