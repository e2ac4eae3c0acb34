"""INT8 variants of the encoder part, with the method chosen per encoder because it decides speed.

Measured on this project's 2-core x86 CPU (the shared environment notes; benchmarks/README.md):
- MatMul-heavy ViTs: dynamic quantisation (QInt8 weights, activations quantised on the fly) makes
  ViT-B/32 2.4x faster than fp32 and needs no calibration data.
- Conv nets: dynamic quantisation turns convolutions into `ConvInteger`, which has no fast kernel in
  ONNX Runtime (EfficientNet-Lite0: 14x SLOWER). They need static QDQ quantisation, per-channel QInt8 weights
  and QUInt8 activations calibrated on real images (Lite0: 1.7x faster, 3.5x smaller).

Portability (measured with scripts/int8_schemes.py on an AVX2 CPU without VNNI, ONNX Runtime 1.32; README
"INT8 that gives the same answers on every CPU"): ONNX Runtime's u8 x s8 GEMM / convolution kernels on x86
without VNNI use VPMADDUBSW, which adds two u8 x s8 products into a SATURATING int16; VNNI and ARM kernels
accumulate in int32. With 8-bit weights (|w| <= 127) the same INT8 model gives different answers on different
CPUs: Lite0 agreed with its fp32 export on 99.76 % of TEST on a VNNI machine and on 97.82 % here. S8S8 is no
escape: it saturates too (97.57 %). The default scheme keeps the weights of GEMM-type ops to 7 bits
(|w| <= 64: a pair sum is at most 255 x 64 x 2 = 32640 < 2^15), so the integer arithmetic is exact on every
CPU; depthwise convolutions keep 8 bits because ONNX Runtime's depthwise kernels widen each product before
adding (exact at 8 bits here; they are not GEMMs). Lite0 with it: 99.76 % agreement and the TEST accuracy of
the VNNI build, at the speed of 8-bit weights; U8U8 is exact too but 4-5x slower here.

Only the encoder is quantised: the preprocessing must stay bit-exact and the head is tiny and sets the
probabilities, so both stay fp32. Calibration feeds the encoder what it sees in deployment: real images
through the same ONNX preprocessing graph.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnx

from waste_edge._io import list_images
from waste_edge.data.sample import seeded_sample
from waste_edge.errors import WasteEdgeError
from waste_edge.export.preprocess_graph import PIXELS

DEFAULT_CALIB_LIMIT = 200
SATURATION_FREE_MAX_WEIGHT = 64  # |w_q| <= 64: 255 * 64 * 2 = 32640 fits VPMADDUBSW's int16


class QuantizationError(WasteEdgeError):
    """INT8 export impossible as asked (no calibration images for a conv encoder, unreadable folder)."""


CALIB_CHUNK = 16  # calibration images whose intermediate tensors onnxruntime holds at once (`quantize_static_pixels`)
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")  # onnxruntime's CalibrationMethod MinMax / Percentile / Entropy


@dataclass(frozen=True)
class Int8Scheme:
    """Integer types of the activations x weights of the quantised GEMMs / convolutions, the weight range, and the
    recipe of a static quantisation (which levers of benchmarks/int8_levers.py it uses)."""

    name: str
    activations: str  # onnxruntime QuantType name: "QUInt8" | "QInt8" (dynamic quantisation: always QUInt8)
    weights: str
    reduce_range: bool  # 7-bit weights
    depthwise_8bit: bool  # keep 8-bit weights on depthwise convs (their kernels widen each product: exact at 8 bits)
    portable: bool  # exact integer arithmetic on every CPU ISA (no int16 saturation anywhere)
    note: str
    float_stem: bool = False  # static: the first convolution (and its padding) stays float; see `_stem_nodes`
    bias_correction: bool = False  # static: int32 biases corrected by -dW . E[x] (export/bias_correction.py)
    calibration: str = "minmax"  # static: how activation ranges are set from the calibration images

    @property
    def recipe(self) -> str:
        """The static-quantisation levers in one line (model metadata, `waste-edge info`)."""
        parts = [f"{self.calibration} calibration"]
        return ", ".join(parts + ["float stem"] * self.float_stem + ["bias correction"] * self.bias_correction)

    def quant_types(self) -> tuple[Any, Any]:
        from onnxruntime.quantization import QuantType

        return getattr(QuantType, self.activations), getattr(QuantType, self.weights)


# The first is the default (bias correction: the accuracy of fp32 on TEST, exact on x86 and emulated Arm); the others
# are measured alternatives (README), kept for comparison and for users who know their deployment CPU.
INT8_SCHEMES: dict[str, Int8Scheme] = {s.name: s for s in (
    Int8Scheme("u8s8-7bit-bc", "QUInt8", "QInt8", reduce_range=True, depthwise_8bit=True, portable=True,
               bias_correction=True, note="7-bit weights (8-bit depthwise), bias correction: no saturation on any CPU"),
    Int8Scheme("u8s8-7bit", "QUInt8", "QInt8", reduce_range=True, depthwise_8bit=True, portable=True,
               note="7-bit weights, 8-bit on depthwise convs: no saturation on any CPU"),
    Int8Scheme("u8s8-7bit-all", "QUInt8", "QInt8", reduce_range=True, depthwise_8bit=False, portable=True,
               note="7-bit weights everywhere, plain reduce_range: portable, less accurate"),
    Int8Scheme("u8s8", "QUInt8", "QInt8", reduce_range=False, depthwise_8bit=False, portable=False,
               note="8-bit weights: VPMADDUBSW saturates on x86 without VNNI, results depend on the CPU"),
    Int8Scheme("u8u8", "QUInt8", "QUInt8", reduce_range=False, depthwise_8bit=False, portable=True,
               note="unsigned weights: 16-bit multiply path, no saturation, several times slower"),
    Int8Scheme("s8s8", "QInt8", "QInt8", reduce_range=False, depthwise_8bit=False, portable=False,
               note="signed activations: saturates on x86 without VNNI too, and slower there"),
    # The float stem wins more accuracy (benchmarks/int8_levers.py) but is not exact across CPUs: its float conv's
    # last bits differ between x86 and Arm and move the QuantizeLinear after it at near-ties (emulated Cortex-A72:
    # 1-5 of its 401,408 values by 1 per photo, spreading from there). Calibrated ranges are used as they are, never rounded: ranges
    # rounded to few significant bits (tried, removed) make the scale ratios of a residual Add simple fractions
    # (16/27, 95/108), so about 1 % of its sums land on .5, which ONNX Runtime's QLinearAdd rounds one way on x86
    # and the other on Arm (benchmarks/README.md "INT8 levers": 441 of 903 ties differed on Cortex-A72; unrounded
    # ranges: no ties, no differences; `add_tie_fractions`).
    Int8Scheme("u8s8-7bit-bc-stem", "QUInt8", "QInt8", reduce_range=True, depthwise_8bit=True, portable=True, float_stem=True,
               bias_correction=True, note="u8s8-7bit-bc with a float stem: more accurate, answers differ slightly between CPUs"),
)}
DEFAULT_INT8_SCHEME = next(iter(INT8_SCHEMES))


def get_int8_scheme(name: str | Int8Scheme) -> Int8Scheme:
    """The scheme called `name` (or `name` itself: the lever study builds variants), or a QuantizationError listing
    the names (before any slow work starts)."""
    if isinstance(name, Int8Scheme):
        return name
    try:
        return INT8_SCHEMES[name]
    except KeyError:
        raise QuantizationError(f"unknown INT8 scheme {name!r}: choose one of {', '.join(INT8_SCHEMES)}") from None


def choose_int8_method(encoder_model: onnx.ModelProto) -> str:
    """`dynamic` for MatMul-dominated graphs (transformers), `static` for convolutional ones."""
    ops = [n.op_type for n in encoder_model.graph.node]
    matmuls = sum(op in ("MatMul", "Gemm") for op in ops)
    convs = sum(op == "Conv" for op in ops)
    return "dynamic" if matmuls > convs else "static"


def quantize_dynamic_encoder(
    encoder_model: onnx.ModelProto,
    scheme: str = DEFAULT_INT8_SCHEME,
    *,
    fuse: bool = True,
    patch_matmul: bool = False,
    per_channel: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Weights of the MatMuls (and fused `Attention` nodes) only, type and range from `scheme`; activations are
    quantised per call, always to uint8.

    With `fuse` (the default) a ViT graph is first rewritten into ONNX Runtime's fused transformer kernels
    (`transformer_opt.py`: Attention, SkipLayerNormalization, BiasGelu, the last layer on the class token
    only; `patch_matmul` also the patch embedding as an INT8 MatMul, a lever that costs accuracy); the fusions
    are checked in fp32 before quantisation, and a graph they do not fit is quantised as it is. The
    patch-embedding Conv is never quantised as a Conv: it would become a slow ConvInteger."""
    from onnxruntime.quantization import quant_pre_process, quantize_dynamic

    from waste_edge.export.transformer_opt import infer_num_heads, optimize_vit_encoder

    sch = get_int8_scheme(scheme)
    if sch.activations != "QUInt8":
        raise QuantizationError(f"INT8 scheme {scheme!r} needs signed activations; dynamic quantisation has only uint8 ones")
    info: dict[str, Any] = {"int8_weights": f"{sch.weights} {'per-channel' if per_channel else 'per-tensor'}"
                                            + (" 7-bit" if sch.reduce_range else ""),
                            "int8_recipe": "dynamic activations (the scheme's static levers do not apply)"}
    ops = ["MatMul"]
    if fuse:
        heads = infer_num_heads(encoder_model)
        if heads is None:
            info["int8_fusions"] = "not applied: no ViT attention found"
        else:
            encoder_model, report = optimize_vit_encoder(encoder_model, heads, patch_matmul=patch_matmul, log=log)
            info["int8_fusions"] = report.fused_ops if report.applied else f"not applied: {report.reason}"
            if report.applied:
                ops.append("Attention")
            elif log:
                log(report.summary())
    with tempfile.TemporaryDirectory() as tmp:
        src, prep, dst = Path(tmp) / "encoder.onnx", Path(tmp) / "encoder-prep.onnx", Path(tmp) / "encoder-int8.onnx"
        onnx.save(encoder_model, src)
        quant_pre_process(src, prep)  # symbolic shape inference (it knows the contrib ops): the quantiser needs types
        quantize_dynamic(prep, dst, op_types_to_quantize=ops, weight_type=sch.quant_types()[1], per_channel=per_channel,
                         reduce_range=sch.reduce_range)
        return onnx.load(dst), info


def calibration_images(calib_dir: str | Path, limit: int = DEFAULT_CALIB_LIMIT, seed: int = 0) -> list[Path]:
    """Up to `limit` image files under `calib_dir`, the seeded sample (`data.sample`): the default model's
    calibration is pinned to it."""
    root = Path(calib_dir)
    if not root.is_dir():
        raise QuantizationError(f"--calib {root}: not a folder of images")
    files = list_images(root)
    if not files:
        raise QuantizationError(f"--calib {root}: no images found (jpg, png, ...)")
    return seeded_sample(files, limit, seed)


class PixelsReader:
    """onnxruntime CalibrationDataReader: real images -> the ONNX preprocessing graph -> `pixels` batches of 1."""

    def __init__(self, pre_model: onnx.ModelProto, files: list[Path], progress: bool, desc: str = "calibrating") -> None:
        from waste_edge.runtime.backends.onnxrt import load_session

        self._pre = load_session(pre_model.SerializeToString(), threads=2, name="preprocessing graph")
        self._files = files
        self._progress = progress
        self._desc = desc
        self.skipped: list[str] = []
        self._it: Iterator[dict[str, np.ndarray]] | None = None

    def _gen(self) -> Iterator[dict[str, np.ndarray]]:
        from tqdm import tqdm

        from waste_edge.data.decode import DecodeError, load_rgb_array

        for path in tqdm(self._files, desc=self._desc, unit="img", disable=not self._progress):
            try:
                rgb = load_rgb_array(path)
            except DecodeError as e:
                self.skipped.append(f"{path}: {e}")
                continue
            yield {PIXELS: self._pre.run([PIXELS], {"image": rgb[None]})[0]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = self._gen()
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None
        self.skipped = []  # the next pass finds the same unreadable files again


def quantize_static_encoder(
    encoder_model: onnx.ModelProto,
    pre_model_rgb: onnx.ModelProto,
    calib_dir: str | Path,
    *,
    limit: int = DEFAULT_CALIB_LIMIT,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    scheme: str | Int8Scheme = DEFAULT_INT8_SCHEME,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Static QDQ (per-channel symmetric weights, asymmetric activations) calibrated on up to `limit` images of
    `calib_dir`, with the scheme's recipe (`quantize_static_pixels`).

    `pre_model_rgb` is the preprocessing graph with RGB input (images are decoded as RGB here).
    """
    files = calibration_images(calib_dir, limit)
    reader = PixelsReader(pre_model_rgb, files, progress)
    model, info = quantize_static_pixels(encoder_model, reader, scheme, log=log)
    used = len(files) - len(reader.skipped)
    if used == 0:
        raise QuantizationError(f"--calib {calib_dir}: none of the {len(files)} images could be decoded")
    if log and reader.skipped:
        log(f"calibration skipped {len(reader.skipped)} unreadable image(s), e.g. {reader.skipped[0]}")
    return model, info | {"calibration_images": used, "calibration_dir": str(calib_dir), "calibration_skipped": len(reader.skipped)}


def quantize_static_pixels(
    encoder_model: onnx.ModelProto,
    reader: Any,
    scheme: str | Int8Scheme = DEFAULT_INT8_SCHEME,
    *,
    cache: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The encoder quantised from `reader` (an onnxruntime CalibrationDataReader of `pixels` batches that can rewind).

    The recipe of `scheme`: `calibration` picks how ranges are set; `float_stem` keeps the first convolution and
    its padding float; `bias_correction` then corrects the int32 biases on the same images. `cache`: onnxruntime's
    calibration cache (ranges computed once per method and image set; the lever study reuses them)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quant_pre_process, quantize_static

    sch = get_int8_scheme(scheme)
    if sch.calibration not in CALIBRATION_METHODS:
        raise QuantizationError(f"INT8 scheme {sch.name!r}: unknown calibration {sch.calibration!r} (choose {', '.join(CALIBRATION_METHODS)})")
    activation_type, weight_type = sch.quant_types()
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}[sch.calibration]
    info: dict[str, Any] = {"int8_recipe": sch.recipe}
    with tempfile.TemporaryDirectory() as tmp:
        src, prep, dst = Path(tmp) / "encoder.onnx", Path(tmp) / "encoder-prep.onnx", Path(tmp) / "encoder-int8.onnx"
        onnx.save(encoder_model, src)
        quant_pre_process(src, prep, skip_symbolic_shape=False)
        fp32 = onnx.load(prep)
        overrides = {}
        if sch.reduce_range and sch.depthwise_8bit:
            overrides = {w: [{"axis": 0, "reduce_range": False}] for w in _depthwise_weights(fp32)}
        exclude = _stem_nodes(fp32) if sch.float_stem else []
        ranges = Path(cache) if cache else Path(tmp) / "ranges.json"
        # Memory: onnxruntime keeps every intermediate tensor of every calibration image until it computes the ranges
        # (~40 MB an image for Lite0: 200 images took ~8 GB). A reader that can be sliced (`len` and `set_range`) is
        # read CALIB_CHUNK images at a time (onnxruntime's strided calibration): MinMax merges the chunks' ranges (a
        # min of mins: the same ranges), the histogram methods merge their histograms. Not `CalibMaxIntermediateOutputs`:
        # onnxruntime 1.32 drops each full chunk without computing its ranges (only the last partial one counts).
        calib_options: dict[str, Any] = {}
        if reader is not None and hasattr(reader, "set_range"):
            calib_options["CalibStridedMinMax"] = _chunk_dividing(len(reader), CALIB_CHUNK)

        def run(data_reader: Any, ranges_file: Path) -> None:
            quantize_static(
                prep, dst, data_reader, quant_format=QuantFormat.QDQ, per_channel=True, weight_type=weight_type,
                activation_type=activation_type, reduce_range=sch.reduce_range, calibrate_method=method, nodes_to_exclude=exclude,
                calibration_cache_path=str(ranges_file),
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, "TensorQuantOverrides": overrides} | calib_options,
            )

        # The ranges as calibrated, not rounded to a coarser grid: rounded ranges make a residual Add's scale ratios
        # simple fractions, whose sums tie at .5 and round differently on x86 and Arm (INT8_SCHEMES).
        run(reader, ranges)  # calibrates (or reads the cache) and writes the ranges
        model = onnx.load(dst)
    if sch.bias_correction:
        from waste_edge.export.bias_correction import correct_biases

        reader.rewind()
        model, corrected, found = correct_biases(model, fp32, iter(reader.get_next, None))
        info["int8_bias_corrected"] = f"{corrected} of {found} convolutions"
        if log and corrected < found:
            log(f"bias correction: {found - corrected} convolution(s) left as they were (the correction does not fit an int32 bias)")
    float_quantized_at_load = onnxruntime_quantizes_at_load(model)
    if float_quantized_at_load:
        raise QuantizationError(f"INT8 scheme {sch.name!r} left float op(s) {', '.join(float_quantized_at_load[:3])} between "
                                "DequantizeLinear and QuantizeLinear: ONNX Runtime would quantise them at load with 8-bit weights")
    return model, info


def _chunk_dividing(n: int, most: int) -> int:
    """The largest chunk size <= `most` that divides `n` (onnxruntime's strided calibration needs an exact split)."""
    return next(k for k in range(min(most, max(n, 1)), 0, -1) if n % k == 0)


def _stem_nodes(fp32: onnx.ModelProto) -> list[str]:
    """The first convolution and the ops between it and the graph input (Lite0: a Pad), to keep float.

    Why the stem: its normalisation is folded into the weights and it reads raw pixels 0..255, so its 7-bit
    rounding errors meet the largest inputs of the network (benchmarks/README.md "INT8 levers": it moved the
    embedding cosine more than any other layer). Why its padding too: a float Conv whose input comes out of a
    DequantizeLinear is quantised by ONNX Runtime itself at load time (its WeightBiasQuantization pass, 8-bit
    per-tensor weights: less accurate and not saturation-free), so a float island must start at the graph input."""
    inputs = {i.name for i in fp32.graph.input}
    producer = {o: n for n in fp32.graph.node for o in n.output}
    for node in fp32.graph.node:
        if node.op_type != "Conv":
            continue
        chain, tensor = [node.name], node.input[0]
        while tensor in producer and producer[tensor].op_type in ("Pad", "Identity", "Cast"):
            chain.append(producer[tensor].name)
            tensor = producer[tensor].input[0]
        if tensor in inputs:
            return chain
        raise QuantizationError("the encoder's first convolution does not read the graph input: no float stem possible")
    raise QuantizationError("the encoder has no convolution: no float stem possible")


def onnxruntime_quantizes_at_load(model: onnx.ModelProto) -> list[str]:
    """Float Conv / ConvTranspose / Gemm nodes whose input comes from a per-tensor DequantizeLinear: ONNX Runtime's
    WeightBiasQuantization (optimisation level basic and up) quantises their weights at load time to 8-bit
    per-tensor, which no export check sees and which saturates on x86 without VNNI."""
    producer = {o: n for n in model.graph.node for o in n.output}
    found = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm"):
            continue
        x, w = producer.get(node.input[0]), producer.get(node.input[1])
        if x is not None and x.op_type == "DequantizeLinear" and (w is None or w.op_type != "DequantizeLinear"):
            found.append(node.name or node.output[0])
    return found


# Where the integer weight operand sits in ONNX Runtime's integer GEMM / convolution ops (QOperator format).
_INT_GEMM_WEIGHT_INPUT = {"MatMulInteger": 1, "ConvInteger": 1, "QLinearConv": 3, "QLinearMatMul": 3, "DynamicQuantizeMatMul": 1,
                          "QAttention": 1, "QGemm": 3}
_FLOAT_GEMM_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")  # QDQ format: weights arrive through DequantizeLinear


def int8_gemm_weight_peak(model: onnx.ModelProto) -> int | None:
    """Largest |int8 weight| feeding an integer GEMM or convolution of `model` (None: it has none).

    <= SATURATION_FREE_MAX_WEIGHT means no u8 x s8 pair sum can saturate VPMADDUBSW's int16, so the model
    computes the same integers on every CPU. uint8 weights (U8U8) take a 16-bit path and never saturate.
    """
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    names: set[str] = set()
    for node in model.graph.node:
        if node.op_type in _INT_GEMM_WEIGHT_INPUT and len(node.input) > _INT_GEMM_WEIGHT_INPUT[node.op_type]:
            w = node.input[_INT_GEMM_WEIGHT_INPUT[node.op_type]]
            if not (node.op_type == "QLinearConv" and _group(node) > 1 and w in inits and inits[w].dims[1] == 1):
                names.add(w)
        elif node.op_type in _FLOAT_GEMM_OPS and not _is_depthwise(node, inits, producer):
            dq = [producer.get(i) for i in node.input[:2]]
            names.update(p.input[0] for p in dq if p is not None and p.op_type == "DequantizeLinear")
    peaks = [int(np.abs(numpy_helper.to_array(inits[n]).astype(np.int32)).max())
             for n in names if n in inits and inits[n].data_type == onnx.TensorProto.INT8]
    return max(peaks) if peaks else None


INT16_MAX = 2**15 - 1
INT32_MAX = 2**31 - 1
ACTIVATION_MAX = 255  # the largest |raw activation| a u8 x s8 kernel multiplies (uint8; int8 ones are within 128)


@dataclass(frozen=True)
class IntegerBound:
    """The worst case of one integer GEMM / convolution of a model, from its int8 weights and the range of its
    activations alone: no machine runs anything, so the verdict holds on every CPU.

    `gemm`: ONNX Runtime's u8 x s8 GEMM on x86 without VNNI multiplies raw uint8 activations (0..255; zero points are
    corrected afterwards in int32) by int8 weights with VPMADDUBSW, which adds two products of the SAME output channel
    into a saturating int16. Which two depends on the kernel's packing, so the bound takes the worst two weights of
    the channel: 255 * (|w|max1 + |w|max2) <= 32767 proves no pairing can saturate.
    `widened`: depthwise convolutions and uint8 weights. MLAS's depthwise kernels (qdwconv.cpp: SSE2 and NEON;
    qdwconv_avx2.cpp) subtract the zero points in int16, form each product exactly in 32 bits and add in int32;
    the u8 x u8 GEMM widens to int16 and adds pairs with VPMADDWD into int32. Only the int32 accumulator can
    overflow. Both kinds also bound the accumulator: 255 * sum|w| of one output channel <= 2^31 - 1."""

    node: str
    kind: str  # "gemm" | "widened"
    depth: int  # products added into one output (K)
    worst_pair: int  # gemm: the largest |w_i a_i + w_j a_j| of one channel; widened: the largest |w a|
    worst_sum: int  # the largest |accumulator| of one channel

    @property
    def exact(self) -> bool:
        return self.worst_sum <= INT32_MAX and (self.kind != "gemm" or self.worst_pair <= INT16_MAX)


def saturating_ops(model: onnx.ModelProto) -> list[IntegerBound]:
    """The integer ops of `model` whose worst case does not fit (empty: the integers are exact on every CPU)."""
    return [b for b in int8_integer_bounds(model) if not b.exact]


def add_tie_fractions(model: onnx.ModelProto, ulps: float = 4.0) -> dict[str, float]:
    """For each quantised Add of a QDQ graph (DequantizeLinear x 2 -> Add -> QuantizeLinear: ONNX Runtime's
    QLinearAdd), the fraction of all 256 x 256 uint8 input pairs whose requantised sum
    (qa - za) * sa / sc + (qb - zb) * sb / sc + zc lies within `ulps` float32 units of its terms' size of a .5 tie.

    Why: that close to a tie the result depends on the last bits of the kernel's float arithmetic, which differ between
    x86 and Arm (MLAS QLinearAdd), so it may round up on one and down on the other. Generic scales make such pairs as
    rare as chance (at most about 2 * ulps * 2^-24 * 500, 1.2e-4 at 4 ulps); scales whose ratios are simple fractions
    (ranges rounded to few significant bits did that: 16/27, 95/108) make about 1 pair in 100 one (benchmarks/README.md
    "INT8 levers")."""
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    q = np.arange(256, dtype=np.float64)
    found = {}
    for add in model.graph.node:
        dqs = [producer.get(i) for i in add.input]
        outs = [c for c in consumers.get(add.output[0], []) if c.op_type == "QuantizeLinear"]
        if add.op_type != "Add" or len(dqs) != 2 or not outs or not all(d is not None and d.op_type == "DequantizeLinear" for d in dqs):
            continue
        (sa, za), (sb, zb), (sc, zc) = [(float(inits[n.input[1]]), float(inits[n.input[2]]) if len(n.input) > 2 else 0.0)
                                        for n in (*dqs, outs[0])]
        ta, tb = (q[:, None] - za) * np.float64(sa) / np.float64(sc), (q[None, :] - zb) * np.float64(sb) / np.float64(sc)
        value = ta + tb + zc
        near = np.abs(value - np.floor(value) - 0.5) <= ulps * 2.0**-24 * (np.abs(ta) + np.abs(tb) + abs(zc))
        found[add.name or add.output[0]] = float(near.mean())
    return found


def int8_integer_bounds(model: onnx.ModelProto) -> list[IntegerBound]:
    """One IntegerBound per integer GEMM / convolution of `model` (QDQ or QOperator format); [] when it has none."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    bounds = []
    for node in model.graph.node:
        if node.op_type in _INT_GEMM_WEIGHT_INPUT and len(node.input) > _INT_GEMM_WEIGHT_INPUT[node.op_type]:
            name = node.input[_INT_GEMM_WEIGHT_INPUT[node.op_type]]
        elif node.op_type in _FLOAT_GEMM_OPS and node.input[1] in producer and producer[node.input[1]].op_type == "DequantizeLinear":
            name = producer[node.input[1]].input[0]
        else:
            continue
        if name not in inits or inits[name].data_type not in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            continue
        w = numpy_helper.to_array(inits[name]).astype(np.int64)
        # One row per output channel: Conv weights are [N, C/group, kh, kw]; MatMul / Gemm-like weights are [K, N].
        # Gemm with transB stores [N, K] like a Conv.
        per_row = node.op_type in ("Conv", "ConvInteger", "QLinearConv", "ConvTranspose") or _attr(node, "transB", 0) == 1
        rows = w.reshape(w.shape[0], -1) if per_row else w.reshape(w.shape[0], -1).T
        if inits[name].data_type == onnx.TensorProto.UINT8:
            rows = rows - 128  # uint8 weights are symmetric around 128 here; the exact zero point only shrinks the bound
        mag = np.abs(rows)
        depthwise = rows.shape[1] == int(np.prod(w.shape[2:])) and _group(node) > 1
        widened = depthwise or inits[name].data_type == onnx.TensorProto.UINT8
        top2 = -np.sort(-mag, axis=1)[:, :2] if mag.shape[1] > 1 else np.pad(mag, ((0, 0), (0, 1)))
        pair = int((top2[:, 0] if widened else top2.sum(1)).max()) * ACTIVATION_MAX
        bounds.append(IntegerBound(node.name or name, "widened" if widened else "gemm", int(rows.shape[1]), pair,
                                   int(mag.sum(1).max()) * ACTIVATION_MAX))
    return bounds


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _group(node: onnx.NodeProto) -> int:
    return _attr(node, "group", 1)


def _weight_channels(conv: onnx.NodeProto, inits: dict[str, onnx.TensorProto], producer: dict[str, onnx.NodeProto]) -> int | None:
    """Input channels per group of a Conv's weight (1: depthwise), through a DequantizeLinear if there is one.
    Depthwise kernels are not GEMMs: they widen each product before adding, so 8-bit weights cannot saturate."""
    name = conv.input[1]
    if name in producer and producer[name].op_type == "DequantizeLinear":
        name = producer[name].input[0]
    return int(inits[name].dims[1]) if name in inits and len(inits[name].dims) > 1 else None


def _is_depthwise(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], producer: dict[str, onnx.NodeProto]) -> bool:
    return node.op_type == "Conv" and _group(node) > 1 and _weight_channels(node, inits, producer) == 1


def _depthwise_weights(model: onnx.ModelProto) -> list[str]:
    """Weight initializers of the depthwise convolutions of an fp32 graph."""
    inits = {t.name: t for t in model.graph.initializer}
    return [n.input[1] for n in model.graph.node if _is_depthwise(n, inits, {})]
