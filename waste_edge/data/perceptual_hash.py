"""Flip/rotation-aware perceptual hashes of one image, and their on-disk cache.

The study augmented its photos with flips and rotations *before* splitting, so a test image can be a mirrored
or rotated copy of a training image. A plain perceptual hash of a mirrored photo looks unrelated to the
original's, so every image is hashed in all 8 orientations of the square (the dihedral group D4): a pair is a
near duplicate when the hash of *some* orientation of one is close to the upright hash of the other.

Two hashes from imagehash (the well-kept library; imported lazily because it is the `[data]` extra):
- `coarse`: 64-bit pHash (8x8 low DCT frequencies of a 32x32 grey thumbnail), small enough for an index;
- `fine`: 256-bit pHash (16x16 of a 64x64 thumbnail) that confirms a coarse match. On waste-sample the
  64-bit hash alone puts distinct "one object on a white background" photos 4-6 bits apart, as close as a
  JPEG re-encoded mirror; the 256-bit hash separates them (see `DEFAULT_FINE_THRESHOLD`).
The 8 orientations are applied to the small grey thumbnail, not the photo: resizing commutes with flips and
quarter turns, so this costs 8 transposes of a 64x64 image instead of 8 resizes of a large one.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from waste_edge._io import atomic_write_bytes, cache_dir, file_digest
from waste_edge.data.decode import MAX_IMAGE_FILE_BYTES, DecodeError, input_file_reason, load_rgb
from waste_edge.errors import InputFileError

# Names of the 8 orientations; `transform` in the report is one of these. rot90 is PIL's ROTATE_90
# (a quarter turn counter-clockwise); transpose mirrors across the main diagonal, transverse across the other.
TRANSFORMS = ("identity", "hflip", "vflip", "rot90", "rot180", "rot270", "transpose", "transverse")
_PIL_OPS = (
    None,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
)
# Index of the inverse of each transform: only the quarter turns are not their own inverse.
INVERSE = (0, 1, 2, 5, 4, 3, 6, 7)

COARSE_BITS = 64
FINE_BITS = 256
# Bump when anything that changes hash values changes (thumbnail size, filter, decode draft, hash choice):
# the cache file name and its header carry it, so stale hashes are never reused.
HASH_ALGORITHM = "dihedral8-phash64-phash256-lanczos-grey-draft64-v1"
_DRAFT = (64, 64)
_FINE_SIDE = 64
_COARSE_SIDE = 32


@dataclass(frozen=True)
class ImageHashes:
    """The 8 orientation hashes of one image: `coarse[t]` (uint64) and `fine[t]` (32 bytes) for TRANSFORMS[t]."""

    coarse: np.ndarray  # (8,) uint64
    fine: np.ndarray  # (8, 32) uint8


def _bits_to_uint64(bits: np.ndarray) -> int:
    # Same bit order as imagehash's hex string (first DCT coefficient = most significant bit).
    return int.from_bytes(np.packbits(bits.ravel()).tobytes(), "big")


def hash_image(rgb: Image.Image) -> ImageHashes:
    """Hash a decoded image in all 8 orientations."""
    import imagehash  # the [data] extra: only the check needs it

    grey = rgb.convert("L")
    small = grey.resize((_FINE_SIDE, _FINE_SIDE), Image.Resampling.LANCZOS)
    tiny = grey.resize((_COARSE_SIDE, _COARSE_SIDE), Image.Resampling.LANCZOS)
    coarse = np.empty(8, dtype=np.uint64)
    fine = np.empty((8, FINE_BITS // 8), dtype=np.uint8)
    for t, op in enumerate(_PIL_OPS):
        s, ti = (small, tiny) if op is None else (small.transpose(op), tiny.transpose(op))
        # The thumbnails already have phash's working size, so its own resize is a no-op copy.
        coarse[t] = _bits_to_uint64(imagehash.phash(ti, hash_size=8, highfreq_factor=4).hash)
        fine[t] = np.packbits(imagehash.phash(s, hash_size=16, highfreq_factor=4).hash.ravel())
    return ImageHashes(coarse, fine)


def hash_file(path: str | Path) -> ImageHashes:
    """Decode (small JPEG draft, EXIF applied) and hash; raises `DecodeError` with the reason."""
    return hash_image(load_rgb(path, draft=_DRAFT))


def content_key(path: str | Path) -> str:
    """blake2b-128 of the file's bytes: the exact-duplicate test and the cache key. Raises DecodeError."""
    try:  # regular files of at most MAX_IMAGE_FILE_BYTES only: a manifest row naming /dev/urandom must not read forever
        return file_digest(path, lambda: hashlib.blake2b(digest_size=16), max_bytes=MAX_IMAGE_FILE_BYTES)
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except InputFileError as e:
        raise DecodeError(input_file_reason(e)) from None
    except OSError as e:
        raise DecodeError(f"cannot read file: {e.strerror or e}") from None


def fine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance between (..., 32) uint8 arrays (broadcasting)."""
    return np.bitwise_count(np.bitwise_xor(a, b)).sum(axis=-1, dtype=np.int64)


def default_cache_dir() -> Path:
    return cache_dir("hashes")


class HashCache:
    """Hashes keyed by file content (+ `HASH_ALGORITHM`), in one npz file (no pickle), written atomically.

    Keyed by content rather than path so that moving, renaming or re-splitting a dataset re-hashes nothing,
    and a file that failed to decode is remembered with its reason (its bytes will fail the same way again).
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else default_cache_dir()
        self.path = self.folder / f"{HASH_ALGORITHM}.npz"
        self.hashes: dict[str, ImageHashes] = {}
        self.errors: dict[str, str] = {}
        self._dirty = False
        self.warning: str | None = None  # set when an unreadable cache file was ignored
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        try:
            with np.load(self.path, allow_pickle=False) as z:
                if str(z["algorithm"]) != HASH_ALGORITHM:
                    return
                keys = [k.decode("ascii") for k in z["keys"]]
                coarse, fine = z["coarse"], z["fine"]
                for i, k in enumerate(keys):
                    self.hashes[k] = ImageHashes(coarse[i], fine[i])
                for k, reason in zip(z["error_keys"], z["error_reasons"]):
                    self.errors[k.decode("ascii")] = str(reason)
        except (OSError, KeyError, ValueError) as e:  # a damaged cache is rebuilt, never fatal
            self.hashes, self.errors = {}, {}
            self.warning = f"ignored unreadable hash cache {self.path}: {e}"

    def get(self, key: str) -> ImageHashes | str | None:
        """Cached hashes, the cached decode-error reason, or None when this content was never hashed."""
        if key in self.hashes:
            return self.hashes[key]
        return self.errors.get(key)

    def put(self, key: str, value: ImageHashes | str) -> None:
        if isinstance(value, str):
            self.errors[key] = value
        else:
            self.hashes[key] = value
        self._dirty = True

    def __len__(self) -> int:
        return len(self.hashes) + len(self.errors)

    def save(self) -> None:
        """Write atomically (`_io.atomic_write_bytes`) so an interrupted run never leaves a half-written cache."""
        if not self._dirty:
            return
        keys = sorted(self.hashes)
        ekeys = sorted(self.errors)
        buf = io.BytesIO()
        np.savez(
            buf,
            algorithm=np.array(HASH_ALGORITHM),
            keys=np.array(keys, dtype="S32"),
            coarse=np.array([self.hashes[k].coarse for k in keys], dtype=np.uint64).reshape(-1, 8),
            fine=np.array([self.hashes[k].fine for k in keys], dtype=np.uint8).reshape(-1, 8, FINE_BITS // 8),
            error_keys=np.array(ekeys, dtype="S32"),
            error_reasons=np.array([self.errors[k] for k in ekeys], dtype=str),
        )
        atomic_write_bytes(self.path, buf.getvalue())
        self._dirty = False
