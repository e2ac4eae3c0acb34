"""Robust image decoding shared by training, evaluation, parity and the runtime.

Real waste photos arrive as greyscale, palette, RGBA, 16-bit and CMYK files, rotated by EXIF tags, and
sometimes truncated or not images at all. Every consumer needs the same answer for the same file (the
reference pipeline, the embedding cache and `predict` must agree), so decoding lives in exactly one place
and a bad file raises `DecodeError` with a one-line reason instead of crashing a long run.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path
from typing import IO, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from waste_edge._io import open_regular
from waste_edge.errors import InputFileError, TooLargeError, WasteEdgeError


# The most pixels any file is decoded to by default (40 MP: a 7,700 x 5,200 photo; 120 MB as RGB). The size is
# read from the header before any pixel is decoded. Larger JPEGs are decoded at 1/2, 1/4 or 1/8 scale by the JPEG
# decoder itself (Pillow's draft), which the models' own resize to ~224 pixels does not notice; larger files of
# other formats are skipped with `ImageTooLargeError`. A 445 KB PNG of 12000 x 12000 must not cost gigabytes (it
# used to cost 2.7 GB of RSS in `predict`), and a valid 16000 x 16000 JPEG must decode (at 1/4 scale), not be
# called corrupt: Pillow's own decompression-bomb check would refuse it in `Image.open`, before the draft, so its
# limit is raised to what an 8x draft can bring within the largest limit a caller may ask for (`--max-pixels`),
# and our header check is the one that decides.
MAX_DECODE_PIXELS = 40_000_000
MAX_PIXELS_CEILING = 178_956_970  # the largest --max-pixels accepted (Pillow's own default bomb error limit)
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, 64 * MAX_PIXELS_CEILING // 2)  # Pillow errors above twice this
warnings.simplefilter("ignore", Image.DecompressionBombWarning)
# Bytes of an image file read at most: a 40 MP 16-bit TIFF is 240 MB; a bigger "image" is not one, and a
# sparse or growing file must not be read for minutes.
MAX_IMAGE_FILE_BYTES = 512 * 1024 * 1024


class DecodeError(WasteEdgeError):
    """A file that cannot be used as an image; `str(err)` is the one-line reason for the report."""


class ImageTooLargeError(DecodeError, TooLargeError):
    """An image whose pixel count (from its header, before decoding) or file size is over the limit: skipped
    with this reason by the batch verbs, HTTP 413 in the service (a `TooLargeError`), never called corrupt."""


def input_file_reason(e: InputFileError) -> str:
    """The one-line reason for an input path refused by `open_regular`, without the path (rows carry it)."""
    return str(e).rpartition(": ")[2] if ": " in str(e) else str(e)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB the way a person would expect to see it."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: PIL's convert('L') clips instead of scaling, so scale by the real range.
        arr = np.array(img, dtype=np.float64)  # one float copy, scaled in place: a 40 MP frame costs 320 MB, not 1.3 GB
        hi = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        np.multiply(arr, 255.0 / hi, out=arr)
        np.clip(np.rint(arr, out=arr), 0, 255, out=arr)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
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
    `max_pixels` (None: `MAX_DECODE_PIXELS`) bounds what is decoded (see `MAX_DECODE_PIXELS`). Only regular
    files are opened (a FIFO or /dev/urandom named in a manifest is refused, never read).
    """
    p = Path(path)
    try:
        fh = open_regular(p)
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except InputFileError as e:
        raise DecodeError(input_file_reason(e)) from None
    except OSError as e:
        raise DecodeError(f"cannot open file: {e.strerror or e}") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise DecodeError("empty file (0 bytes)")
        if size > MAX_IMAGE_FILE_BYTES:
            raise ImageTooLargeError(f"file is {size} bytes, more than the limit of {MAX_IMAGE_FILE_BYTES} bytes for an image")
        return _decode(fh, draft=draft, max_pixels=max_pixels)


def decode_rgb_bytes(data: bytes, *, max_pixels: int | None = MAX_DECODE_PIXELS, formats: Sequence[str] | None = None) -> np.ndarray:
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
    max_pixels = MAX_DECODE_PIXELS if max_pixels is None else max_pixels
    try:
        with Image.open(src, formats=formats) as img:
            if img.width * img.height > max_pixels:
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
            ImageOps.exif_transpose(img, in_place=True)  # in place: without a rotation tag, no full-size copy
            rgb = _to_rgb(img)
    except DecodeError:
        raise
    except Image.DecompressionBombError as e:  # Pillow's own limit: a header beyond even what an 8x JPEG draft brings within ours
        raise ImageTooLargeError(f"image is too large to decode ({str(e).split(',')[0]})") from None
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


def load_rgb_array(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """`load_rgb` as an HxWx3 uint8 array (RGB order), the form the runtime feeds to a fused model."""
    return np.ascontiguousarray(np.asarray(load_rgb(path, max_pixels=max_pixels), dtype=np.uint8))
