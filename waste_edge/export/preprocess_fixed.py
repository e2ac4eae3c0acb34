"""The fixed-size preprocessing graph: Pillow's resampling for one frame size, from precomputed taps.

Input: `image` uint8 NHWC [N, H, W, 3] with H and W fixed at export. Output: `pixels` float32 NCHW [N, 3, S, S],
RGB, 0..255 integers, equal to the PIL reference crop (the same contract as the dynamic graph in
`preprocess_graph.py`).

The geometry and every filter weight are computed at export time in numpy (`pil_taps.fixed_steps`), so the graph
holds only constants and a short chain of plain ops, which every runtime implements the same way:

    Cast(uint8 -> float32), once, on the input (TensorRT allows UINT8 only at the network boundary)
    Slice            the band of rows / columns the passes read (constant starts and ends), then NCHW
    one pass per axis: Pillow's taps as constants (FORMS), then Pillow's (sum + 2^21) >> 22 and clip8
    Reshape + ReduceSum   the box sums of `Image.reduce(k)` (or AveragePool, BOX_FORMS), then Pillow's rounded mean
    Gather([2, 1, 0])     RGB order for BGR frames

No `Resize` (TensorRT rejects antialiasing, runtimes disagree on it), no `If`, no float64, no shape arithmetic.
Why the arithmetic is exact in float32 is explained in `pil_taps.py`; `check_exact` refuses tables where it
would not be (frames far larger than any camera's for the output size).

Layout and forms (measured with benchmarks/preprocess_forms.py, interleaved, one run): every pass runs along the
rows (axis 2) of planar NCHW, where each tap is a whole contiguous row; a column pass is framed by two Transposes
(a Gather along the last axis copies one float at a time and is ~5x slower in ONNX Runtime, channels-last layouts
~20x). A pass is either `gather` (Gather the taps -> [N, C, out, k, W], Mul by each weight half, ReduceSum: the
issue's form) or `band` (default: outputs in blocks of 16, each a small MatMul over the window of input rows it
reads; ~15-25 % faster on CPU for CLIP frames, same result). Box sums: ReduceSum and AveragePool + Round measured
equal within noise; ReduceSum (fewer ops) is the default. MatMul stays exact in TensorRT even under TF32 (every
operand has at most 11 significant bits), and Polygraphy disables TF32 unless asked.
"""

from __future__ import annotations

import numpy as np
import onnx

from waste_edge.export.onnx_builder import FLOAT, PIXELS, UINT8, GraphBuilder, tensor_info
from waste_edge.export.pil_taps import (
    HALF_BITS,
    PRECISION_BITS,
    BoxMean,
    Crop,
    Pass,
    Step,
    Taps,
    check_exact,
    fixed_steps,
    reduce_split,
)
from waste_edge.runtime.metadata import INPUT_NAME
from waste_edge.train.preprocess import PreprocessSpec

FORMS = ("gather", "band")  # how a resampling pass applies its taps (see the module docstring)
BOX_FORMS = ("reduce", "pool")  # how a box reduce sums: Reshape + ReduceSum, or AveragePool
DEFAULT_FORM = "band"
DEFAULT_BOX_FORM = "reduce"


def _f(g: GraphBuilder, value: float | np.ndarray) -> str:
    return g.const(np.asarray(value, np.float32), np.float32, "k")


def _round_pillow(g: GraphBuilder, hi_sum: str, lo_sum: str) -> str:
    """(hi * 2^11 + lo + 2^21) >> 22 clipped to 0..255 == floor((hi + floor((lo + 2^21) / 2^11)) / 2^11): every term
    an integer below 2^24 or one times a power of two, so float32 computes it exactly."""
    inv = _f(g, 2.0**-HALF_BITS)
    carry = g.op("Floor", [g.op("Mul", [g.op("Add", [lo_sum, _f(g, float(1 << (PRECISION_BITS - 1)))]), inv])])
    y = g.op("Floor", [g.op("Mul", [g.op("Add", [hi_sum, carry]), inv])])
    return g.op("Clip", [y, _f(g, 0.0), _f(g, 255.0)])


def _pass_gather(g: GraphBuilder, x: str, n_in: int, taps: Taps, dims: list[int]) -> tuple[str, str]:
    """Rows: gather the taps along axis 2 -> [N, C, out, k, W], multiply by each weight half, sum the k taps."""
    out, k = taps.index.shape
    gathered = g.op("Gather", [x, g.const(taps.index, np.int64, "taps")], axis=2)
    hi, lo = taps.halves()
    sums = []
    for name, half in (("w_hi", hi), ("w_lo", lo)):
        w = g.const(half.reshape(out, k, 1), np.float32, name)
        sums.append(g.op("ReduceSum", [g.op("Mul", [gathered, w]), g.const([3])], keepdims=0))
    return sums[0], sums[1]


def _dense(taps: Taps, n_in: int) -> np.ndarray:
    """[2 * out, n_in] float32: the hi halves in the first `out` rows, the lo halves below (zeros off the taps)."""
    out, k = taps.index.shape
    hi, lo = taps.halves()
    dense = np.zeros((2 * out, n_in), np.float32)
    rows = np.repeat(np.arange(out), k)
    np.add.at(dense, (rows, taps.index.ravel()), hi.ravel())
    np.add.at(dense, (rows + out, taps.index.ravel()), lo.ravel())
    return dense


def _pass_band(g: GraphBuilder, x: str, n_in: int, taps: Taps, dims: list[int], block: int = 16) -> tuple[str, str]:
    """Banded MatMul: outputs in blocks of `block`, each a small dense GEMM over the window of inputs it reads."""
    out, k = taps.index.shape
    nb = -(-out // block)
    dense = _dense(taps, n_in)
    starts, length = [], 1
    for j in range(nb):
        cols = np.flatnonzero(np.any(dense[np.r_[j * block : min(out, (j + 1) * block), out + j * block : out + min(out, (j + 1) * block)]] != 0, axis=0))
        lo_i, hi_i = (int(cols.min()), int(cols.max()) + 1) if cols.size else (0, 1)
        starts.append(lo_i)
        length = max(length, hi_i - lo_i)
    length = min(length, n_in)
    starts = [min(s, n_in - length) for s in starts]
    window = np.asarray(starts)[:, None] + np.arange(length)[None, :]  # [nb, L]
    w3 = np.zeros((nb, 2 * block, length), np.float32)
    for j in range(nb):
        for i in range(block):
            o = j * block + i
            if o < out:
                w3[j, i] = dense[o, window[j]]
                w3[j, block + i] = dense[out + o, window[j]]
    gathered = g.op("Gather", [x, g.const(window, np.int64, "window")], axis=2)  # [N, C, nb, L, W]
    y = g.op("MatMul", [g.const(w3, np.float32, "band"), gathered])  # [N, C, nb, 2 * block, W]
    y = g.op("Reshape", [y, g.const([0, dims[0], nb, 2, block * dims[2]])])
    hi_b, lo_b = g.op_n("Split", [y, g.const([1, 1])], 2, axis=3)
    shape = g.const([0, dims[0], nb * block, dims[2]])
    halves = [g.op("Reshape", [h, shape]) for h in (hi_b, lo_b)]
    if nb * block != out:
        halves = [g.op("Slice", [h, g.const([0]), g.const([out]), g.const([2])]) for h in halves]
    return halves[0], halves[1]


def _box_sum(g: GraphBuilder, x: str, dims: list[int], axis: int, taps: Taps) -> str:
    """k consecutive pixels summed along axis 2 (rows) or 3 (columns) of [N, C, H, W]: Reshape + ReduceSum, the
    batch dimension copied (0), the sum over a contiguous last axis or over whole rows (ONNX Runtime fast paths)."""
    out, k = taps.index.shape
    first = int(taps.index[0, 0])
    if first or dims[axis - 1] != out * k:
        x = g.op("Slice", [x, g.const([first]), g.const([first + out * k]), g.const([axis])])
    split = [0, dims[0], out, k, dims[2]] if axis == 2 else [0, dims[0], dims[1], out, k]
    return g.op("ReduceSum", [g.op("Reshape", [x, g.const(split)]), g.const([axis + 1])], keepdims=0)


def _is_box(taps: Taps) -> bool:
    """Weight-1 taps over consecutive, non-overlapping blocks (Image.reduce)."""
    return taps.rounding == "sum" and taps.index.shape[1] > 1 and bool(
        np.all(taps.index == taps.index[0, 0] + np.arange(taps.index.size).reshape(taps.index.shape)))


def _box_mean(g: GraphBuilder, x: str, kk: int) -> str:
    """Pillow's rounded box mean ((S + kk // 2) * M) >> 24 (Reduce.c) in float32-exact pieces (`reduce_split`)."""
    amend, m_hi, m_lo = reduce_split(kk)
    t = g.op("Add", [x, _f(g, float(amend))])
    scaled = g.op("Mul", [t, _f(g, m_hi * 2.0**-16)])  # T * Mh / 2^16: an integer < 2^24 times a power of two
    if m_lo:
        low = g.op("Floor", [g.op("Mul", [t, _f(g, m_lo * 2.0**-8)])])  # floor(T * Ml / 2^8)
        scaled = g.op("Add", [scaled, g.op("Mul", [low, _f(g, 2.0**-16)])])
    return g.op("Floor", [scaled])


def _box_pool(g: GraphBuilder, x: str, k: int) -> str:
    """k x k box sums as AveragePool (kernel = stride = k) times k^2, rounded back to the exact integer sum: the
    mean of <= 255 * k^2 over k^2 is off by at most a few ulp, far less than the 0.5 that `Round` forgives."""
    avg = g.op("AveragePool", [x], kernel_shape=[k, k], strides=[k, k])
    return g.op("Round", [g.op("Mul", [avg, _f(g, float(k * k))])])


def _resample_pass(g: GraphBuilder, x: str, dims: list[int], axis: int, taps: Taps, form: str) -> str:
    """One Pillow pass along rows (axis 2) or columns (axis 3) of NCHW `x`. Columns are transposed to rows first:
    a Gather along the last axis copies one float at a time, along rows it copies whole contiguous rows."""
    check_exact(taps)
    apply = _pass_gather if form == "gather" else _pass_band
    if axis == 2:
        return _round_pillow(g, *apply(g, x, dims[1], taps, dims))
    xt = g.op("Transpose", [x], perm=[0, 1, 3, 2])
    y = _round_pillow(g, *apply(g, xt, dims[2], taps, [dims[0], dims[2], dims[1]]))
    return g.op("Transpose", [y], perm=[0, 1, 3, 2])


def apply_steps(
    g: GraphBuilder, x: str, dims: list[int], steps: list[Step], form: str = DEFAULT_FORM, box_form: str = DEFAULT_BOX_FORM
) -> tuple[str, list[int]]:
    """The steps on float32 NCHW `x`; `dims` = [C, H, W] (the batch dimension is whatever comes)."""
    if form not in FORMS or box_form not in BOX_FORMS:
        raise ValueError(f"unknown form {form!r} / {box_form!r} (expected one of {FORMS} / {BOX_FORMS})")
    dims = list(dims)
    steps = list(steps)
    while steps:
        s = steps.pop(0)
        if isinstance(s, Crop):
            if (s.top, s.left, s.height, s.width) != (0, 0, dims[1], dims[2]):
                x = g.op("Slice", [x, g.const([s.top, s.left]), g.const([s.top + s.height, s.left + s.width]), g.const([2, 3])])
                dims = [dims[0], s.height, s.width]
        elif isinstance(s, Pass) and _is_box(s.taps):
            out, k = s.taps.index.shape
            nxt = steps[0] if steps else None
            if box_form == "pool" and isinstance(nxt, Pass) and _is_box(nxt.taps) and nxt.axis != s.axis and nxt.taps.index.shape == (out, k) \
                    and int(s.taps.index[0, 0]) == 0 == int(nxt.taps.index[0, 0]) and dims[1] == dims[2] == out * k:
                steps.pop(0)
                x = _box_pool(g, x, k)
                dims = [dims[0], out, out]
            else:
                x = _box_sum(g, x, dims, 2 + s.axis, s.taps)
                dims[1 + s.axis] = out
        elif isinstance(s, Pass):
            x = _resample_pass(g, x, dims, 2 + s.axis, s.taps, form)
            dims[1 + s.axis] = s.taps.out_size
        elif isinstance(s, BoxMean):
            x = _box_mean(g, x, s.kk)
        else:  # pragma: no cover - fixed_steps only makes the three kinds
            raise TypeError(f"unknown preprocessing step {s!r}")
    return x, dims


def build_fixed_preprocess_model(
    spec: PreprocessSpec,
    channel_order: str,
    imgsz: tuple[int, int],
    *,
    opset: int = 18,
    batch: int | None = None,
    form: str = DEFAULT_FORM,
    box_form: str = DEFAULT_BOX_FORM,
) -> onnx.ModelProto:
    """NHWC uint8 `image` [N, H, W, 3] -> NCHW float `pixels` (RGB, 0..255) for frames of exactly `imgsz` = (H, W)."""
    height, width = int(imgsz[0]), int(imgsz[1])
    steps = fixed_steps(spec, height, width)
    out_size = spec.size
    g = GraphBuilder("pre/")
    x = g.op("Cast", [INPUT_NAME], to=FLOAT)
    c = steps.pop(0) if steps and isinstance(steps[0], Crop) else None
    if c is not None:  # crop while still channels-last: transpose only what is kept
        x = g.op("Slice", [x, g.const([c.top, c.left]), g.const([c.top + c.height, c.left + c.width]), g.const([1, 2])])
    x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    kept = [3, c.height, c.width] if c is not None else [3, height, width]
    nchw, dims = apply_steps(g, x, kept, steps, form, box_form)
    if dims[1:] != [out_size, out_size]:  # fixed_steps always lands on the spec's size
        raise AssertionError(f"fixed preprocessing ends at {dims[1:]}, not {spec.size}x{spec.size}")
    if channel_order == "BGR":
        nchw = g.op("Gather", [nchw, g.const([2, 1, 0])], axis=1)
    g.op("Identity", [nchw], PIXELS)
    bb = batch if batch else "batch"
    return g.model(
        [tensor_info(INPUT_NAME, UINT8, [bb, height, width, 3])],
        [tensor_info(PIXELS, FLOAT, [bb, 3, spec.size, spec.size])],
        opset,
        "waste_edge_preprocess_fixed",
    )
