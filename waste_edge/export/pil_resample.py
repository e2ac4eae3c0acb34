"""Pillow's resampling (`Image.resize` with BILINEAR / BICUBIC) rebuilt bit-exactly from ONNX ops.

ONNX Runtime's antialiased `Resize` on uint8 matches Pillow to 1 grey level, but in a few per cent of pixels
for bilinear, and that is enough to move a sharp logistic head's probabilities by 2e-3 on real photos (more
than the fp32 parity tolerance). This module reproduces Pillow's own arithmetic instead
(libImaging/Resample.c): per output pixel, the filter taps and weights computed in double precision from
the runtime sizes, normalised, rounded to 22-bit fixed point, applied with 32-bit integer sums and the same
rounding and clipping, one axis at a time on uint8 images.

The weights are laid out as dense [out, in] matrices and applied with float32 MatMul (exact, see
`_dense_weights`): fast for the small resizes of `box_crop` (< 2x), wasteful for big downscales of full
frames, which is why the CLIP `shortest` path keeps ONNX `Resize` (1 grey level).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from waste_edge.export.onnx_builder import FLOAT, GraphBuilder

DOUBLE = TensorProto.DOUBLE
PRECISION_BITS = 22  # Pillow: 32 - 8 - 2
FILTER_SUPPORT = {"bilinear": 1.0, "bicubic": 2.0}


def _filter(g: GraphBuilder, x: str, kind: str) -> str:
    """Pillow's filter functions on a double tensor, with the same operation order."""
    d = lambda v: g.const(v, np.float64)  # noqa: E731
    ax = g.op("Abs", [x])
    if kind == "bilinear":
        return g.op("Where", [g.op("Less", [ax, d(1.0)]), g.op("Sub", [d(1.0), ax]), d(0.0)])
    if kind == "bicubic":  # a = -0.5
        near = g.op("Add", [g.op("Mul", [g.op("Mul", [g.op("Sub", [g.op("Mul", [d(1.5), ax]), d(2.5)]), ax]), ax]), d(1.0)])
        far = g.op("Mul", [g.op("Sub", [g.op("Mul", [g.op("Add", [g.op("Mul", [g.op("Sub", [ax, d(5.0)]), ax]), d(8.0)]), ax]), d(4.0)]), d(-0.5)])
        return g.op("Where", [g.op("Less", [ax, d(1.0)]), near, g.op("Where", [g.op("Less", [ax, d(2.0)]), far, d(0.0)])])
    raise ValueError(f"no exact Pillow filter for {kind!r}")


def _dense_weights(g: GraphBuilder, in_size: str, out_size: str, kind: str) -> str:
    """Pillow's fixed-point weights (precompute_coeffs + normalize_coeffs_8bpc) as one dense float32 matrix
    [in, 2 * out]: the high and the low 11-bit halves side by side (weight = hi * 2^11 + lo, lo in [-1024, 1024)).

    Every product of a pixel (<= 255) with a half and every partial sum stays an integer below 2^24, so float32
    GEMM (any summation order, FMA or not) computes both half sums exactly; the dense layout runs on the fast
    SGEMM kernels, and one GEMM with both halves costs less than two.
    """
    d = lambda v: g.const(v, np.float64)  # noqa: E731
    in_f = g.op("Cast", [in_size], to=DOUBLE)
    scale = g.op("Div", [in_f, g.op("Cast", [out_size], to=DOUBLE)])
    filterscale = g.op("Max", [scale, d([1.0])])
    support = g.op("Mul", [d([FILTER_SUPPORT[kind]]), filterscale])
    inv = g.op("Div", [d([1.0]), filterscale])
    scalar = lambda t: g.op("Squeeze", [t, g.const([0])])  # noqa: E731
    xx = g.op("Cast", [g.op("Range", [g.const(0), scalar(out_size), g.const(1)])], to=DOUBLE)
    center = g.op("Unsqueeze", [g.op("Mul", [g.op("Add", [xx, d(0.5)]), scale]), g.const([1])])  # [out, 1]
    # (int)(v + 0.5) truncates toward zero; Floor differs only below 0, where xmin is clamped to 0 anyway.
    xmin = g.op("Max", [g.op("Floor", [g.op("Add", [g.op("Sub", [center, support]), d(0.5)])]), d(0.0)])
    xend = g.op("Min", [g.op("Floor", [g.op("Add", [g.op("Add", [center, support]), d(0.5)])]), in_f])  # xmin + xmax
    cols = g.op("Unsqueeze", [g.op("Cast", [g.op("Range", [g.const(0), scalar(in_size), g.const(1)])], to=DOUBLE), g.const([0])])
    w = _filter(g, g.op("Mul", [g.op("Add", [g.op("Sub", [cols, center]), d(0.5)]), inv]), kind)  # [out, in]
    inside = g.op("And", [g.op("GreaterOrEqual", [cols, xmin]), g.op("Less", [cols, xend])])
    w = g.op("Where", [inside, w, d(0.0)])
    ww = g.op("ReduceSum", [w, g.const([1])], keepdims=1)
    w = g.op("Div", [w, g.op("Where", [g.op("Equal", [ww, d(0.0)]), d(1.0), ww])])
    # normalize_coeffs_8bpc: (int)(w * 2^22 +- 0.5), i.e. round half away from zero.
    scaled = g.op("Mul", [w, d(float(1 << PRECISION_BITS))])
    fixed = g.op("Mul", [g.op("Sign", [scaled]), g.op("Floor", [g.op("Add", [g.op("Abs", [scaled]), d(0.5)])])])
    # Signed split into 11-bit halves, exact in double: hi = floor((fixed + 1024) / 2048), lo = fixed - 2048 hi.
    hi = g.op("Floor", [g.op("Mul", [g.op("Add", [fixed, d(1024.0)]), d(1.0 / 2048)])])
    lo = g.op("Sub", [fixed, g.op("Mul", [hi, d(2048.0)])])
    both = g.op("Concat", [hi, lo], axis=0)  # [2 * out, in]
    return g.op("Transpose", [g.op("Cast", [both], to=FLOAT)])  # [in, 2 * out]


def _finish(g: GraphBuilder, sums: str, axis: int) -> str:
    """(hi * 2^11 + lo + 2^21) >> 22 clipped to 0..255, from the two exact half sums along `axis`; in double,
    where these integers (< 2^32) and the power-of-two scaling are exact."""
    hi, lo = g.op_n("Split", [sums], 2, num_outputs=2, axis=axis)
    d = lambda v: g.const(v, np.float64)  # noqa: E731
    acc = g.op("Add", [g.op("Add", [g.op("Mul", [g.op("Cast", [hi], to=DOUBLE), d(2048.0)]), g.op("Cast", [lo], to=DOUBLE)]), d(float(1 << (PRECISION_BITS - 1)))])
    out = g.op("Clip", [g.op("Floor", [g.op("Mul", [acc, d(1.0 / (1 << PRECISION_BITS))])]), d(0.0), d(255.0)])
    return g.op("Cast", [out], to=FLOAT)


def resize_exact_nchw(g: GraphBuilder, x: str, h: str, w: str, new_h: str, new_w: str, kind: str) -> str:
    """Pillow's `resize((new_w, new_h))` on NCHW `x` (uint8 values), horizontal pass first (Pillow's order
    unless the height shrinks by more than twice as many pixels as the width). Returns float32 NCHW holding the
    uint8 result (0..255 integers)."""
    xf = g.op("Cast", [x], to=FLOAT)
    horiz = _finish(g, g.op("MatMul", [xf, _dense_weights(g, w, new_w, kind)]), axis=3)  # [N, 3, H, new_w]: uint8 values
    vert_w = g.op("Transpose", [_dense_weights(g, h, new_h, kind)])  # [2 * new_h, H]
    return _finish(g, g.op("MatMul", [vert_w, horiz]), axis=2)
