"""The geometric part of an encoder's preprocessing: `PreprocessSpec` and its reference on PIL images.

Two resize modes exist:

- ``shortest``: open_clip's own path: resize the shortest side to `size` (bicubic, antialiased), centre
  crop `size` x `size`. For CLIP encoders the model's `preprocess_cfg` is the source of truth.
- ``box_crop``: ours, for edge models whose head we train: with k = max(1, shortest // size), centre-crop a
  square and average k x k boxes (PIL `reduce`, an exact integer box filter that a graph does with a
  reshape + sum). When a square of side k * size keeps at least 7/8 of the short side (a 640x480 camera
  frame: crop 448 of 480, reduce 2), that is the crop and the reduce lands exactly on `size`: no resampling
  at all. Otherwise the square is the largest multiple of k, and the reduced square is resized to `size`
  (bilinear), so odd sizes keep their field of view. Bit-exact inside ONNX and cheap on camera frames.

It lives in the data layer (numpy and Pillow only) because two sides need the same steps: training and the
reference pipeline (`train/preprocess.py` adds the normalisation), and the runtime, which shrinks a large
frame to exactly what the fused graph would crop from it before frames are batched (`runtime/classifier.py`),
so memory does not grow with the source's resolution. Export rebuilds the same steps inside the graph.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from PIL import Image

RESIZE_MODES = ("shortest", "box_crop")
_PIL_INTERP = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


@dataclass(frozen=True)
class PreprocessSpec:
    size: int  # side of the square the encoder sees
    resize_mode: str  # see module docstring
    interpolation: str  # bicubic | bilinear | nearest
    antialias: bool  # PIL-style antialiasing when downscaling (PIL always does; ONNX Resize needs antialias=1)
    mean: tuple[float, float, float]  # per RGB channel, in [0, 1] units (x/255 - mean) / std
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {self.resize_mode!r} (expected one of {RESIZE_MODES})")
        if self.interpolation not in _PIL_INTERP:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PreprocessSpec":
        return cls(
            size=int(d["size"]), resize_mode=str(d["resize_mode"]), interpolation=str(d["interpolation"]),
            antialias=bool(d["antialias"]), mean=tuple(float(x) for x in d["mean"]), std=tuple(float(x) for x in d["std"]),
        )


def box_crop_geometry(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """(left, top, side, k) of the `box_crop` mode; shared by the PIL reference and the ONNX builder."""
    short = min(width, height)
    k = max(1, short // size)
    exact = k * size <= short and 8 * k * size >= 7 * short  # the reduce lands on `size`, little is cropped
    side = k * size if exact else (short // k) * k
    return (width - side) // 2, (height - side) // 2, side, k


def shortest_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(new_w, new_h) of torchvision's `Resize(size)`: the short side becomes `size`, the long one is truncated."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def resize_crop(img: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """The geometric part of the spec on a PIL RGB image: returns a `size` x `size` RGB image."""
    interp = _PIL_INTERP[spec.interpolation]
    if spec.resize_mode == "box_crop":
        left, top, side, k = box_crop_geometry(img.width, img.height, spec.size)
        img = img.crop((left, top, left + side, top + side))
        if k > 1:
            img = img.reduce(k)
        if img.size != (spec.size, spec.size):
            img = img.resize((spec.size, spec.size), interp)
        return img
    # "shortest": torchvision Resize(int) semantics (the long side is truncated), then a centre crop.
    w, h = img.size
    new_w, new_h = shortest_side_size(w, h, spec.size)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), interp)
    left = int(round((new_w - spec.size) / 2.0))
    top = int(round((new_h - spec.size) / 2.0))
    return img.crop((left, top, left + spec.size, top + spec.size))
