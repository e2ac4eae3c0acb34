"""The encoder's preprocessing rebuilt as an ONNX graph from its `PreprocessSpec`.

Input: `image` uint8 NHWC, any H and W (the camera frame as decoded, in the recorded channel order). This is the
dynamic form, for ONNX Runtime users who want any frame size; when the frame size is known at export the fixed-size
form of `preprocess_fixed.py` replaces it (exact, TensorRT-clean, no Resize).
Output: `pixels` float32 NCHW [N, 3, size, size] in RGB order and 0..255 units: the exact uint8 crop the PIL
reference produces, cast to float. Scaling and normalisation are NOT done here: the encoder part folds them
into its first convolution (exact, free at run time), and keeping 0..255 here lets `parity` compare this
stage with PIL in grey levels.

Why each step is written the way it is:
- `shortest` (CLIP): ONNX `Resize` on the uint8 tensor, so ONNX Runtime rounds and saturates like PIL (to 1
  grey level); `antialias=1` makes downscaling a PIL-style filter instead of aliasing point sampling, and the
  two passes run in Pillow's order (see `_resize_two_pass`). A bit-exact rebuild of Pillow's arithmetic
  (`pil_resample.py`) would cost a dense GEMM per pass over the full frame, too slow for big frames.
- `box_crop` (edge models): the k x k box average as two ReduceSums with Pillow's own fixed-point rounding
  (bit-exact with `Image.reduce`), which lands exactly on `size` for camera-like frames; other sizes take an
  `If` branch with Pillow's resampling rebuilt exactly from GEMMs on the small reduced square
  (`pil_resample.py`). Bit-exact with the PIL reference, and no resampling cost on camera frames.
- Geometry is computed from the runtime shape with integer ops so that one graph serves every frame size and
  reproduces torchvision's `Resize(int)` truncation and `CenterCrop`'s round-half-even offsets (ONNX `Round`
  is half-to-even like Python's `round`), and `box_crop_geometry`.
- The BGR -> RGB swap is done on the small crop, not on the full frame: geometry commutes with channel order.
"""

from __future__ import annotations

import numpy as np
import onnx

from waste_edge.export.onnx_builder import FLOAT, INT64, PIXELS, UINT8, GraphBuilder, tensor_info
from waste_edge.export.pil_resample import DOUBLE, FILTER_SUPPORT, resize_exact_nchw
from waste_edge.runtime.metadata import INPUT_NAME
from waste_edge.train.preprocess import PreprocessSpec

CHANNEL_ORDERS = ("BGR", "RGB")
_MODES = {"bicubic": "cubic", "bilinear": "linear", "nearest": "nearest"}


def _resize(g: GraphBuilder, x: str, sizes: str, spec: PreprocessSpec) -> str:
    mode = _MODES[spec.interpolation]
    attrs: dict = {"mode": mode, "coordinate_transformation_mode": "half_pixel"}
    if mode == "cubic":
        attrs["cubic_coeff_a"] = -0.5  # PIL's bicubic kernel (ONNX defaults to -0.75)
    if mode == "nearest":
        attrs["nearest_mode"] = "floor"
    else:
        attrs["exclude_outside"] = 1  # PIL renormalises the filter over in-image taps at the borders
        if spec.antialias:
            attrs["antialias"] = 1
    return g.op("Resize", [x, "", "", sizes], **attrs)


def _resize_two_pass(g: GraphBuilder, x: str, n: str, h: str, w: str, new_h: str, new_w: str, spec: PreprocessSpec) -> str:
    """Resize NHWC `x` to (new_h, new_w) in the pass order Pillow uses, since the uint8 rounding and clipping
    between the two passes depends on it (up to ~20 grey levels on noisy images).

    Pillow resamples horizontally first, unless the height shrinks by more than twice as many pixels as the
    width (`(H - h) > 0 and (H - h) > 2 * (W - w)`, libImaging/Resample.c of recent Pillow, checked against
    13.0; older Pillow always goes horizontal first), then vertically first. ONNX Runtime's
    two-axis Resize is horizontal-first, so the other order is an `If` branch with two one-axis Resizes.
    """
    three = g.const([3])
    dy, dx = g.op("Sub", [h, new_h]), g.op("Sub", [w, new_w])
    vertical_first = g.op("And", [g.op("Greater", [dy, g.const([0])]), g.op("Greater", [dy, g.op("Mul", [dx, g.const([2])])])])
    cond = g.op("Squeeze", [vertical_first, g.const([0])])

    def branch(name: str, steps: list[str]) -> onnx.GraphProto:
        sub = GraphBuilder(f"{g.prefix}{name}/")
        y = x
        for sizes in steps:
            y = _resize(sub, y, sub.op("Concat", sizes, axis=0), spec)
        out = sub.op("Identity", [y])
        return onnx.helper.make_graph(sub.nodes, name, [], [tensor_info(out, UINT8, [None, None, None, 3])], sub.initializers)

    return g.op(
        "If", [cond],
        then_branch=branch("vertical_first", [[n, new_h, w, three], [n, new_h, new_w, three]]),
        else_branch=branch("horizontal_first", [[n, new_h, new_w, three]]),
    )


def _resize_small_square(g: GraphBuilder, reduced: str, n: str, m: str, size: str, spec: PreprocessSpec) -> str:
    """`reduced` (NCHW float holding uint8 values, m x m) resized to size x size, in an `If` so that the camera
    case (m == size) costs nothing."""
    cond = g.op("Squeeze", [g.op("Not", [g.op("Equal", [m, size])]), g.const([0])])
    sub = GraphBuilder(f"{g.prefix}resize/")
    if spec.interpolation in FILTER_SUPPORT and spec.antialias:
        # Pillow's arithmetic exactly (square to square: Pillow's horizontal-first order).
        out = sub.op("Identity", [resize_exact_nchw(sub, reduced, m, m, size, size, spec.interpolation)])
    else:
        nhwc = sub.op("Transpose", [sub.op("Cast", [reduced], to=UINT8)], perm=[0, 2, 3, 1])
        resized = _resize(sub, nhwc, sub.op("Concat", [n, size, size, sub.const([3])], axis=0), spec)
        out = sub.op("Cast", [sub.op("Transpose", [resized], perm=[0, 3, 1, 2])], to=FLOAT)
    then = onnx.helper.make_graph(sub.nodes, "resize", [], [tensor_info(out, FLOAT, [None, 3, None, None])], sub.initializers)
    keep = GraphBuilder(f"{g.prefix}keep/")
    same = keep.op("Identity", [reduced])
    other = onnx.helper.make_graph(keep.nodes, "keep", [], [tensor_info(same, FLOAT, [None, 3, None, None])], keep.initializers)
    return g.op("If", [cond], then_branch=then, else_branch=other)


def _dims(g: GraphBuilder, image: str) -> tuple[str, str, str]:
    """(batch, height, width) of an NHWC tensor as int64 [1] tensors."""
    shape = g.op("Shape", [image])
    one = lambda i: g.op("Slice", [shape, g.const([i]), g.const([i + 1])])  # noqa: E731
    return one(0), one(1), one(2)


def build_preprocess_model(
    spec: PreprocessSpec,
    channel_order: str = "BGR",
    *,
    opset: int = 18,
    batch: int | None = None,
    imgsz: tuple[int, int] | None = None,
) -> onnx.ModelProto:
    """NHWC uint8 `image` -> NCHW float `pixels` (RGB, 0..255), reproducing `train.preprocess.resize_crop`.

    `batch` fixes the batch dimension (None = dynamic). With `imgsz` = (H, W) the frame size is known, and the
    graph is the fixed-size form (`preprocess_fixed.py`: Pillow's taps as constants, no Resize / If / float64);
    without it, this dynamic form serves any frame size.
    """
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
    if imgsz is not None:
        from waste_edge.export.preprocess_fixed import build_fixed_preprocess_model

        return build_fixed_preprocess_model(spec, channel_order, imgsz, opset=opset, batch=batch)
    if opset < 18:
        raise ValueError("the preprocessing graph needs opset >= 18 (Resize antialias)")
    g = GraphBuilder("pre/")
    n, h, w = _dims(g, INPUT_NAME)
    nchw: str | None = None
    size = g.const([spec.size])
    short = g.op("Min", [h, w])
    if spec.resize_mode == "shortest":
        # torchvision Resize(int): short side -> size, long side int(size * long / short) (truncated).
        new_h = g.op("Div", [g.op("Mul", [h, size]), short])
        new_w = g.op("Div", [g.op("Mul", [w, size]), short])
        resized = _resize_two_pass(g, INPUT_NAME, n, h, w, new_h, new_w, spec)
        # CenterCrop: offset int(round((new - size) / 2.0)), Python's round = half to even = ONNX Round.
        half_off = lambda d: g.op("Cast", [g.op("Round", [g.op("Div", [g.op("Cast", [g.op("Sub", [d, size])], to=FLOAT), g.const([2.0], np.float32)])])], to=INT64)  # noqa: E731
        top, left = half_off(new_h), half_off(new_w)
        starts = g.op("Concat", [top, left], axis=0)
        ends = g.op("Add", [starts, g.const([spec.size, spec.size])])
        crop = g.op("Slice", [resized, starts, ends, g.const([1, 2])])
    elif spec.resize_mode == "box_crop":
        # train.preprocess.box_crop_geometry: k = max(1, short // size); side = k * size when that fits and keeps
        # >= 7/8 of the short side (then the reduce lands on `size`), else the largest multiple of k; centred.
        k = g.op("Max", [g.op("Div", [short, size]), g.const([1])])
        ks = g.op("Mul", [k, size])
        exact = g.op("And", [g.op("LessOrEqual", [ks, short]),
                             g.op("GreaterOrEqual", [g.op("Mul", [ks, g.const([8])]), g.op("Mul", [short, g.const([7])])])])
        side = g.op("Where", [exact, ks, g.op("Mul", [g.op("Div", [short, k]), k])])
        m = g.op("Div", [side, k])  # the reduced side: `size` on the fast path
        two = g.const([2])
        top = g.op("Div", [g.op("Sub", [h, side]), two])
        left = g.op("Div", [g.op("Sub", [w, side]), two])
        starts = g.op("Concat", [top, left], axis=0)
        ends = g.op("Add", [starts, g.op("Concat", [side, side], axis=0)])
        square = g.op("Slice", [INPUT_NAME, starts, ends, g.const([1, 2])])
        # Box sums in NCHW: along the width as a reduction of the last axis, then along the height over one
        # middle axis with the rows contiguous; both are ONNX Runtime fast paths (a single ReduceSum over two
        # strided axes of NHWC is ~10x slower). Sums of <= k*k uint8 values are exact in float32.
        three = g.const([3])
        xf = g.op("Cast", [g.op("Transpose", [square], perm=[0, 3, 1, 2])], to=FLOAT)
        wsum = g.op("ReduceSum", [g.op("Reshape", [xf, g.op("Concat", [g.const([-1]), k], axis=0)]), g.const([1])], keepdims=0)
        sums = g.op("ReduceSum", [g.op("Reshape", [wsum, g.op("Concat", [g.const([-1]), k, m], axis=0)]), g.const([1])], keepdims=0)
        # PIL reduce(k), bit-exact: Pillow's fixed-point rounding ((sum + kk // 2) * M) >> 24 with
        # M = uint32(float(2^32) / float(256 * kk)), which differs from exact rounding for k not a power of two.
        # The products stay below 2^41, so double arithmetic is exact (and much faster than int64 Div).
        kk = g.op("Mul", [k, k])
        mult = g.op("Cast", [g.op("Div", [g.const([2.0**32], np.float32), g.op("Cast", [g.op("Mul", [kk, g.const([256])])], to=FLOAT)])], to=INT64)
        amend = g.op("Cast", [g.op("Div", [kk, two])], to=DOUBLE)
        scaled = g.op("Mul", [g.op("Add", [g.op("Cast", [sums], to=DOUBLE), amend]), g.op("Cast", [mult], to=DOUBLE)])
        mean = g.op("Cast", [g.op("Floor", [g.op("Mul", [scaled, g.const([2.0**-24], np.float64)])])], to=FLOAT)
        reduced = g.op("Reshape", [mean, g.op("Concat", [g.const([-1]), three, m, m], axis=0)])  # NCHW, uint8 values
        nchw = _resize_small_square(g, reduced, n, m, size, spec)
    else:  # PreprocessSpec validates modes; a new mode must be added here too
        raise ValueError(f"no ONNX preprocessing for resize mode {spec.resize_mode!r}")
    if nchw is None:
        nchw = g.op("Transpose", [crop], perm=[0, 3, 1, 2])
    if channel_order == "BGR":
        nchw = g.op("Gather", [nchw, g.const([2, 1, 0])], axis=1)
    g.op("Cast", [nchw], PIXELS, to=FLOAT)
    bb = batch if batch else "batch"
    return g.model(
        [tensor_info(INPUT_NAME, UINT8, [bb, "height", "width", 3])],
        [tensor_info(PIXELS, FLOAT, [bb, 3, spec.size, spec.size])],
        opset,
        "waste_edge_preprocess",
    )
