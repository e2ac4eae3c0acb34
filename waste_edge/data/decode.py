"""Robust image decoding shared by training, evaluation, parity and the runtime.

Real waste photos arrive as greyscale, palette, RGBA, 16-bit and CMYK files, rotated by EXIF tags, and
sometimes truncated or not images at all. Every consumer needs the same answer for the same file (the
reference pipeline, the embedding cache and `predict` must agree), so decoding lives in exactly one place
and a bad file raises `DecodeError` with a one-line reason instead of crashing a long run.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import IO, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from waste_edge.errors import WasteEdgeError


# The most pixels any file is decoded to (40 MP: a 7,700 x 5,200 photo; 120 MB as RGB). Larger JPEGs are decoded
# at 1/2, 1/4 or 1/8 scale by the JPEG decoder itself (Pillow's draft), which the models' own resize to ~224
# pixels does not notice; larger files of other formats are skipped with this reason. It sits below Pillow's
# decompression-bomb limit (89 MP), whose warning we therefore silence: a 445 KB PNG of 12000 x 12000 must not
# cost gigabytes (it used to cost 2.7 GB of RSS in `predict`).
MAX_DECODE_PIXELS = 40_000_000
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


class DecodeError(WasteEdgeError):
    """A file that cannot be used as an image; `str(err)` is the one-line reason for the report."""


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB the way a person would expect to see it."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: PIL's convert('L') clips instead of scaling, so scale by the real range.
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr = np.clip(np.rint(arr * (255.0 / hi)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent backgrounds become white, not black: product photos with cut-out backgrounds.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str | Path, *, draft: tuple[int, int] | None = None, max_pixels: int | None = MAX_DECODE_PIXELS) -> Image.Image:
    """Decode `path` to an upright 8-bit RGB PIL image, or raise `DecodeError` saying why not.

    `draft=(w, h)` lets a JPEG decode at 1/2, 1/4 or 1/8 scale (never below that size): the duplicate check
    only needs a thumbnail, and a 3072x2048 photo then decodes several times faster. Other formats ignore it.
    """
    p = Path(path)
    try:
        if p.stat().st_size == 0:
            raise DecodeError("empty file (0 bytes)")
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except OSError as e:
        raise DecodeError(f"cannot stat file: {e.strerror or e}") from None
    return _decode(p, draft=draft, max_pixels=max_pixels)


class ImageTooLargeError(DecodeError):
    """An image whose pixel count is over the caller's limit (checked from the header, before decoding)."""


def decode_rgb_bytes(data: bytes, *, max_pixels: int | None = None, formats: Sequence[str] | None = None) -> np.ndarray:
    """`load_rgb_array` for an image held in memory (an HTTP upload): the same decoder, so the same pixels.

    `max_pixels` is checked from the header before any pixel is decoded (`ImageTooLargeError`); `formats`
    (PIL names such as "JPEG", "PNG") limits which decoders may even look at the bytes."""
    if not data:
        raise DecodeError("empty image (0 bytes)")
    return np.ascontiguousarray(np.asarray(_decode(io.BytesIO(data), max_pixels=max_pixels, formats=formats), dtype=np.uint8))


def _decode(
    src: Path | IO[bytes],
    *,
    draft: tuple[int, int] | None = None,
    max_pixels: int | None = None,
    formats: Sequence[str] | None = None,
) -> Image.Image:
    try:
        with Image.open(src, formats=formats) as img:
            if max_pixels is not None and img.width * img.height > max_pixels:
                full = (img.width, img.height)
                if img.format == "JPEG":  # reduced decoding: 1/2, 1/4 or 1/8 scale, in the decoder, no full-size buffer
                    k = min(8, 2 ** math.ceil(math.log2(math.sqrt(img.width * img.height / max_pixels))))
                    img.draft(img.mode, (math.ceil(img.width / k), math.ceil(img.height / k)))
                if img.width * img.height > max_pixels:
                    raise ImageTooLargeError(f"image is {full[0]}x{full[1]} = {full[0] * full[1]} pixels, more than the limit of "
                                             f"{max_pixels} (skipped: decoding it would take {full[0] * full[1] * 3 // 2**20} MiB)")
            if draft is not None:
                img.draft(None, draft)
            img.load()  # forces the full decode, so truncation is detected here and not later
            img = ImageOps.exif_transpose(img) or img
            rgb = _to_rgb(img)
    except DecodeError:
        raise
    except Image.DecompressionBombError as e:  # Pillow's own limit, hit in open() before ours: too large, not corrupt
        raise ImageTooLargeError(f"image is too large to decode: {str(e).splitlines()[0]}") from None
    except UnidentifiedImageError:
        raise DecodeError("not an image (unrecognised format)" if formats is None else f"not a {' or '.join(formats)} image") from None
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DecodeError(f"corrupt or truncated image: {msg}") from None
    if rgb.width == 0 or rgb.height == 0:
        raise DecodeError("image has zero width or height")
    return rgb


def load_rgb_frame(path: str | Path, frame: tuple[int, int] | None) -> Image.Image:
    """`load_rgb`, then resized (bilinear) to `frame` = (w, h) when given: a photo as the camera frame a fixed-size
    model takes, the same frame for the model and for the reference it is compared with."""
    img = load_rgb(path)
    if frame is not None and img.size != tuple(frame):
        img = img.resize(tuple(frame), Image.Resampling.BILINEAR)
    return img


def load_rgb_array(path: str | Path) -> np.ndarray:
    """`load_rgb` as an HxWx3 uint8 array (RGB order), the form the runtime feeds to a fused model."""
    return np.ascontiguousarray(np.asarray(load_rgb(path), dtype=np.uint8))
