"""Pillow's resampling for one known frame size, computed at export time in numpy (the fixed-size preprocessing).

When the frame size is known, every filter tap of Pillow's `Image.resize` (libImaging/Resample.c:
`precompute_coeffs` + `normalize_coeffs_8bpc`) and of `Image.reduce` (libImaging/Reduce.c) is a constant. This
module computes them once, in double precision with Pillow's own operation order, and hands them to the graph
builder as small tables: per axis an index [out, taps] and an integer weight [out, taps] in 22-bit fixed point.
The graph then only gathers, multiplies and sums (`preprocess_fixed.py`): no `Resize`, no float64, no shape math.

Exactness in float32 (the only float type TensorRT runs at full speed, and the one ONNX Runtime and OpenVINO
agree on): a pixel (<= 255) times a 22-bit weight overflows float32's 24-bit mantissa, so each weight is split
into signed 11-bit halves, w = hi * 2^11 + lo with lo in [-1024, 1024). Each half-sum is an integer whose
partial sums stay below 2^24 in magnitude (checked here per table, `check_exact`), so float32 computes them
exactly in any summation order. Pillow's `(sum + 2^21) >> 22` then equals, in float32,

    floor((hi_sum + floor((lo_sum + 2^21) / 2^11)) / 2^11)

because floor((a + y) / m) == floor((a + floor(y)) / m) for an integer a and an integer m > 0, every
intermediate is an integer below 2^24 (or such an integer times a power of two), and dividing by a power of
two is exact. `apply_taps` below runs the same arithmetic in int64 as the numpy reference the tests compare with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from waste_edge.train.preprocess import PreprocessSpec

PRECISION_BITS = 22  # Pillow: 32 - 8 - 2
HALF_BITS = 11  # the weight split: w = hi * 2^11 + lo
FLOAT32_EXACT = 1 << 24  # integers below this are exact in float32
FILTERS = {"bilinear": 1.0, "bicubic": 2.0}  # Pillow's filter supports


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
    """Pillow's bicubic_filter with a = -0.5, the same operation order (no FMA in Pillow's x86-64 build)."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


_FILTER_FN = {"bilinear": _bilinear, "bicubic": _bicubic}


@dataclass(frozen=True)
class Taps:
    """One axis of a resampling: output o = sum_t in[index[o, t]] * weight[o, t] (weights in 22-bit fixed point,
    padded taps have weight 0 and repeat a valid index). `rounding` says how the sum becomes a uint8 value:
    "resample" is Pillow's clip8((sum + 2^21) >> 22); "sum" leaves the integer sum (first axis of a box reduce)."""

    index: np.ndarray  # int64 [out, taps]
    weight: np.ndarray  # int64 [out, taps]
    rounding: str = "resample"

    @property
    def out_size(self) -> int:
        return int(self.index.shape[0])

    def halves(self) -> tuple[np.ndarray, np.ndarray]:
        """(hi, lo) with weight = hi * 2^11 + lo and lo in [-1024, 1024): both fit 11 bits plus sign."""
        hi = np.floor_divide(self.weight + (1 << (HALF_BITS - 1)), 1 << HALF_BITS)
        return hi, self.weight - hi * (1 << HALF_BITS)


def pillow_taps(in_size: int, out_size: int, kind: str, box: tuple[float, float] | None = None) -> Taps:
    """Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for one axis, as index and weight tables.

    `box` is the (in0, in1) source window of `Image.resize(..., box=...)`; the default is the whole axis.
    """
    if kind not in _FILTER_FN:
        raise ValueError(f"no Pillow filter {kind!r} (expected one of {', '.join(FILTERS)})")
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    in0, in1 = (0.0, float(in_size)) if box is None else (float(np.float32(box[0])), float(np.float32(box[1])))
    scale = float(np.float32(in1) - np.float32(in0)) / out_size
    filterscale = max(scale, 1.0)
    support = FILTERS[kind] * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    index = np.zeros((out_size, ksize), np.int64)
    weight = np.zeros((out_size, ksize), np.int64)
    ss = 1.0 / filterscale
    used = 0
    for xx in range(out_size):
        center = in0 + (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)  # C's (int) truncates; the clamp makes it equal to floor
        xmax = min(int(center + support + 0.5), in_size) - xmin
        x = np.arange(xmax, dtype=np.float64)
        w = _FILTER_FN[kind]((x + xmin - center + 0.5) * ss)
        ww = 0.0
        for v in w:  # Pillow accumulates left to right; np.sum may pair-wise sum and round differently
            ww += float(v)
        if ww != 0.0:
            w = w / ww
        scaled = w * (1 << PRECISION_BITS)
        fixed = np.where(w < 0, (-0.5 + scaled).astype(np.int64), (0.5 + scaled).astype(np.int64))  # (int) truncates
        index[xx, :xmax] = np.arange(xmin, xmin + xmax)
        index[xx, xmax:] = xmin + max(xmax - 1, 0)  # padding taps: weight 0 on a valid pixel
        weight[xx, :xmax] = fixed
        used = max(used, xmax)
    return Taps(index[:, :used], weight[:, :used])


def crop_taps(taps: Taps, start: int, size: int) -> Taps:
    """The outputs [start, start + size) only: a crop after a resize is a subset of its output rows."""
    if start < 0 or start + size > taps.out_size:
        raise ValueError(f"crop [{start}, {start + size}) outside the {taps.out_size} outputs")
    index, weight = taps.index[start : start + size], taps.weight[start : start + size]
    keep = np.flatnonzero(np.any(weight != 0, axis=0))
    last = int(keep.max()) + 1 if keep.size else 1
    return Taps(index[:, :last].copy(), weight[:, :last].copy(), taps.rounding)


def offset_taps(taps: Taps, offset: int) -> Taps:
    """The same taps reading from a frame where the resampled region starts at `offset` (a crop before it)."""
    return Taps(taps.index + offset, taps.weight, taps.rounding)


def box_taps(out_size: int, k: int, offset: int = 0) -> Taps:
    """The k-pixel box of `Image.reduce(k)` along one axis as taps of weight 1 (an integer sum, no rounding)."""
    index = offset + np.arange(out_size)[:, None] * k + np.arange(k)[None, :]
    return Taps(index.astype(np.int64), np.ones((out_size, k), np.int64), "sum")


def identity_taps(size: int, offset: int = 0) -> Taps:
    """A crop without resampling: one tap of weight 2^22, which Pillow's rounding maps back to the pixel."""
    return Taps(np.arange(offset, offset + size, dtype=np.int64)[:, None], np.full((size, 1), 1 << PRECISION_BITS, np.int64))


def vertical_first(in_w: int, in_h: int, out_w: int, out_h: int) -> bool:
    """Pillow's pass order (libImaging/Resample.c of Pillow >= 10.1: `ImagingResampleInner`): vertical first when
    the height shrinks by more than twice as many pixels as the width, else horizontal first. Checked against the
    installed Pillow by tests/export/test_pil_taps.py, which fails if a Pillow release changes the rule."""
    dy, dx = in_h - out_h, in_w - out_w
    return dy > 0 and dy > 2 * dx


def reduce_multiplier(kk: int) -> int:
    """Pillow's `division_UINT32(kk, 8)`: (UINT32)((float)2^32 / (float)(256 * kk)), in float32 like the C code."""
    return int(np.float32(4294967296.0) / np.float32(256 * kk))


def reduce_split(kk: int) -> tuple[int, int, int]:
    """Pillow's box mean ((S + kk // 2) * M) >> 24 in float32-exact pieces: (amend, M >> 8, M & 255).

    With T = S + amend <= 256 * kk: T * (M >> 8) < 2^24 and T * (M & 255) < 2^16 * kk, so for kk < 256 both
    products and floor((T * Mh + floor(T * Ml / 2^8)) / 2^16) are exact in float32 (the same nested-floor identity
    as the resample rounding)."""
    if kk >= 256:
        raise ValueError(f"box reduce of {kk} pixels: more than float32 can sum exactly here (k <= 15)")
    m = reduce_multiplier(kk)
    return kk // 2, m >> 8, m & 255


def check_exact(taps: Taps, max_input: int = 255) -> None:
    """Refuse tables whose half-sums could leave float32's exact integer range (huge downscales)."""
    hi, lo = taps.halves()
    for name, half in (("hi", hi), ("lo", lo)) if taps.rounding == "resample" else (("sum", taps.weight),):
        bound = int(np.abs(half).sum(axis=1).max()) * max_input + (1 << (PRECISION_BITS - 1))
        if bound >= FLOAT32_EXACT:
            raise ValueError(f"{taps.out_size} outputs x {taps.index.shape[1]} taps: the {name} sums may reach {bound} >= 2^24, "
                             "not exact in float32 (the frame is too large for this output size)")


# -- numpy reference of the graph's arithmetic (int64, for tests and export-time self-checks) ----------------------


def apply_taps(x: np.ndarray, taps: Taps, axis: int) -> np.ndarray:
    """Apply `taps` along `axis` of an integer array with Pillow's integer arithmetic (the graph's oracle)."""
    x = np.asarray(x, np.int64)
    g = np.take(x, taps.index, axis=axis)  # axis -> (out, taps)
    shape = [1] * g.ndim
    shape[axis], shape[axis + 1] = taps.weight.shape
    s = np.sum(g * taps.weight.reshape(shape), axis=axis + 1)
    if taps.rounding == "sum":
        return s
    return np.clip((s + (1 << (PRECISION_BITS - 1))) >> PRECISION_BITS, 0, 255)


def reduce_mean(sums: np.ndarray, kk: int) -> np.ndarray:
    """Pillow's box mean of integer sums of kk pixels (Reduce.c)."""
    return ((np.asarray(sums, np.int64) + kk // 2) * reduce_multiplier(kk)) >> 24


# -- the whole preprocessing of one spec at one frame size, as steps on an H x W x 3 image -------------------------


@dataclass(frozen=True)
class Crop:
    top: int
    left: int
    height: int
    width: int


@dataclass(frozen=True)
class Pass:
    axis: int  # 0 = rows (vertical pass), 1 = columns (horizontal pass) of an H x W x C image
    taps: Taps


@dataclass(frozen=True)
class BoxMean:
    kk: int  # pixels per box: Pillow's rounded mean of the box sums of the passes before


Step = Crop | Pass | BoxMean


def resize_steps(in_w: int, in_h: int, out_w: int, out_h: int, kind: str, crop: tuple[int, int, int, int] | None = None) -> list[Step]:
    """`Image.resize((out_w, out_h), kind)` then `crop((left, top, left + cw, top + ch))`, in Pillow's pass order;
    an axis Pillow does not resample is a plain crop (no pass), as in `ImagingResampleInner`."""
    left, top, cw, ch = crop if crop is not None else (0, 0, out_w, out_h)
    passes: dict[int, Taps] = {}
    if out_w != in_w:
        passes[1] = crop_taps(pillow_taps(in_w, out_w, kind), left, cw)
    if out_h != in_h:
        passes[0] = crop_taps(pillow_taps(in_h, out_h, kind), top, ch)
    # Crop the frame to the rows and columns the passes read (a plain crop on an axis without a pass); the taps
    # then index into that band.
    bands = {0: (top, ch), 1: (left, cw)}
    for a in passes:
        lo, hi = int(passes[a].index.min()), int(passes[a].index.max()) + 1
        bands[a] = (lo, hi - lo)
        passes[a] = offset_taps(passes[a], -lo)
    (t, h), (l, w) = bands[0], bands[1]
    steps: list[Step] = [Crop(t, l, h, w)] if (t, l, h, w) != (0, 0, in_h, in_w) else []
    order = [0, 1] if vertical_first(in_w, in_h, out_w, out_h) else [1, 0]
    return steps + [Pass(a, passes[a]) for a in order if a in passes]


def fixed_steps(spec: PreprocessSpec, height: int, width: int) -> list[Step]:
    """`train.preprocess.resize_crop(img, spec)` for an H x W image, as constant steps."""
    from waste_edge.train.preprocess import box_crop_geometry, shortest_side_size

    if spec.interpolation not in FILTERS:
        raise ValueError(f"the fixed-size preprocessing has no {spec.interpolation!r} filter (only {', '.join(FILTERS)})")
    size = spec.size
    if spec.resize_mode == "shortest":
        new_w, new_h = shortest_side_size(width, height, size)
        left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
        return resize_steps(width, height, new_w, new_h, spec.interpolation, (left, top, size, size))
    if spec.resize_mode == "box_crop":
        left, top, side, k = box_crop_geometry(width, height, size)
        steps: list[Step] = [Crop(top, left, side, side)]
        m = side // k
        if k > 1:
            steps += [Pass(0, box_taps(m, k)), Pass(1, box_taps(m, k)), BoxMean(k * k)]  # sums: any order
        if m != size:
            steps += resize_steps(m, m, size, size, spec.interpolation)
        return steps
    raise ValueError(f"no fixed-size preprocessing for resize mode {spec.resize_mode!r}")


def run_steps(rgb: np.ndarray, steps: list[Step]) -> np.ndarray:
    """The steps on an H x W x C uint8 image in integer arithmetic: the oracle of the graph (equal to PIL)."""
    x = np.asarray(rgb, np.int64)
    for s in steps:
        if isinstance(s, Crop):
            x = x[s.top : s.top + s.height, s.left : s.left + s.width]
        elif isinstance(s, Pass):
            x = apply_taps(x, s.taps, s.axis)
        else:
            x = reduce_mean(x, s.kk)
    return x.astype(np.uint8)
