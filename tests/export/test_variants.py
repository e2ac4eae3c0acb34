"""INT8 (dynamic for ViTs, static QDQ for conv nets) and FP16 variants: structure and agreement."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

from waste_edge.export.exporter import ExportError, export, validate_options
from waste_edge.export.parity import TOLERANCES, run_parity
from waste_edge.export.quantize import (
    DEFAULT_INT8_SCHEME,
    INT8_SCHEMES,
    SATURATION_FREE_MAX_WEIGHT,
    QuantizationError,
    calibration_images,
    choose_int8_method,
    IntegerBound,
    int8_gemm_weight_peak,
    int8_integer_bounds,
    onnxruntime_quantizes_at_load,
    quantize_dynamic_encoder,
    saturating_ops,
)
from waste_edge.runtime.cpu import cpu_info
from waste_edge.runtime.formats import FormatError, get_format


def _ops(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}


def _pre_and_head_untouched(model: onnx.ModelProto) -> None:
    """Only the encoder is quantised: preprocessing (exact uint8 resize) and head (fp32 weights) are not."""
    pre_head = [n for n in model.graph.node if n.name.startswith(("pre/", "head/"))]
    assert len(pre_head) > 20
    assert not [n.name for n in pre_head if n.op_type in QUANT_OPS]
    weights = [t for t in model.graph.initializer if t.name.startswith(("head/weight", "head/bias"))]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT for t in weights)


@pytest.fixture(scope="module")
def clip_int8(clip_run, tmp_path_factory):
    return export(clip_run, "onnx", out=tmp_path_factory.mktemp("q") / "clip-int8.onnx", int8=True, dynamic=True, progress=False)


@pytest.fixture(scope="module")
def lite0_int8(lite0_run, export_images, tmp_path_factory):
    return export(lite0_run, "onnx", out=tmp_path_factory.mktemp("q") / "lite0-int8.onnx", int8=True, calib=export_images, dynamic=True, progress=False)


def test_vit_int8_is_dynamic_matmul_quantisation(clip_int8, clip_run, export_images):
    model = onnx.load(clip_int8.path)
    onnx.checker.check_model(model, full_check=True)
    ops = _ops(model)
    assert clip_int8.details["int8_method"] == "dynamic" and clip_int8.metadata.variant == "int8"
    assert ops["MatMulInteger"] > 0 and ops["DynamicQuantizeLinear"] > 0
    assert ops["ConvInteger"] == 0  # the patch Conv would be a slow ConvInteger on CPU
    assert clip_int8.details["int8_fusions"]["Attention"] == 2 and ops["QAttention"] == 2  # fused before quantisation
    _pre_and_head_untouched(model)
    report = run_parity(clip_int8.path, clip_run, export_images, progress=False)
    assert report.tolerance == TOLERANCES["int8"]
    assert report.passed and report.agreement >= 0.995, report.summary()
    assert report.embedding_cosine_min > 0.99


def test_conv_int8_is_static_qdq_calibrated_on_images(lite0_int8, lite0_run, lite0_onnx, export_images):
    model = onnx.load(lite0_int8.path)
    onnx.checker.check_model(model, full_check=True)
    ops = _ops(model)
    assert lite0_int8.details["int8_method"] == "static"
    assert lite0_int8.details["calibration_images"] == 8
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0 and ops["ConvInteger"] == 0
    # Per-channel QInt8 weights: the conv weights are stored as int8 initializers.
    int8_inits = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_inits) >= 40
    _pre_and_head_untouched(model)
    assert onnxruntime_quantizes_at_load(model) == []  # no float conv that ONNX Runtime would give 8-bit weights at load
    assert lite0_int8.size_bytes < 0.5 * lite0_onnx.stat().st_size
    report = run_parity(lite0_int8.path, lite0_run, export_images, progress=False)
    assert report.passed and report.agreement >= 0.995, report.summary()


def test_static_int8_without_calibration_images_is_a_clear_error(lite0_run):
    with pytest.raises(QuantizationError, match="--calib"):
        export(lite0_run, "onnx", int8=True, progress=False)


def test_calibration_folder_checks(tmp_path, export_images):
    with pytest.raises(QuantizationError, match="not a folder"):
        calibration_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QuantizationError, match="no images"):
        calibration_images(tmp_path / "empty")
    picked = calibration_images(export_images, limit=3)
    assert len(picked) == 3 and picked == calibration_images(export_images, limit=3)


def test_int8_method_follows_the_graph(clip_onnx, lite0_onnx):
    assert choose_int8_method(onnx.load(clip_onnx)) == "dynamic"
    assert choose_int8_method(onnx.load(lite0_onnx)) == "static"


def test_fp16_keeps_normalisation_in_fp32_and_agrees(clip_run, clip_fp16, export_images):
    res = clip_fp16
    model = onnx.load(res.path)
    onnx.checker.check_model(model, full_check=True)
    assert res.metadata.variant == "fp16"
    inits = {t.name: t.data_type for t in model.graph.initializer}
    assert sum(v == onnx.TensorProto.FLOAT16 for v in inits.values()) >= 8
    typed = {vi.name: vi.type.tensor_type.elem_type for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    typed.update(inits)
    norms = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert norms
    for n in norms:
        assert typed.get(n.input[0]) == onnx.TensorProto.FLOAT, n.name
    # io and head stay fp32
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    report = run_parity(res.path, clip_run, export_images, progress=False)
    assert report.passed and report.agreement >= 0.995, report.summary()
    assert np.isfinite(report.max_abs_dp)


# --- Portability: the same INT8 model must compute the same integers on every CPU --------------------------
# ONNX Runtime's u8 x s8 GEMM kernels on x86 without VNNI (VPMADDUBSW) add two products into a saturating int16;
# VNNI and ARM accumulate in int32. GEMM weights within +-64 keep every pair sum (<= 255 * 64 * 2) exact.


def _int8_weights(model: onnx.ModelProto) -> list[tuple[str, np.ndarray, int]]:
    """(op type, int8 weight, group) of every quantised Conv / MatMul (through DequantizeLinear or MatMulInteger)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    found = []
    for n in model.graph.node:
        if n.op_type in ("Conv", "MatMul", "MatMulInteger"):
            src = n.input[1]
            if src in producer and producer[src].op_type == "DequantizeLinear":
                src = producer[src].input[0]
            if src in inits and inits[src].data_type == onnx.TensorProto.INT8:
                group = next((a.i for a in n.attribute if a.name == "group"), 1)
                found.append((n.op_type, numpy_helper.to_array(inits[src]), group))
    assert found, "no int8 conv / MatMul weight in the model"
    return found


def _worst_case_activations(w: np.ndarray) -> np.ndarray:
    """uint8 rows [M, K] for a weight [K, N] that drive the sums to their extremes: all 255, and 255 exactly
    where a column's weights are positive (negative), for the columns with the largest positive (negative) sums."""
    w = w.astype(np.int64)
    rows = [np.full(w.shape[0], 255)]
    rows += [np.where(w[:, j] > 0, 255, 0) for j in np.argsort(-np.clip(w, 0, None).sum(0))[:4]]
    rows += [np.where(w[:, j] < 0, 255, 0) for j in np.argsort(np.clip(w, None, 0).sum(0))[:4]]
    return np.asarray(rows, np.uint8)


def _session(model: onnx.ModelProto, tmp_path, name: str):
    """A CPU session at full optimisation, with the optimised graph written out to check which kernel ran."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3  # the "optimised graph is hardware specific" warning is the point here
    opts.optimized_model_filepath = str(tmp_path / f"{name}-optimised.onnx")
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess, {n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node}


def _qdq_conv_vs_exact(w: np.ndarray, group: int, x: np.ndarray, tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """A QDQ Conv (u8 input, int8 per-channel weights, unit scales) as ONNX Runtime runs it (QLinearConv) and
    its exact result: the integer sums requantised by a power-of-two scale, rounded half to even like the kernel."""
    from onnx import TensorProto, helper, numpy_helper

    assert x.shape[2:] == w.shape[2:] and group in (1, w.shape[0])  # one output pixel: the conv is a plain sum
    xi, wi = x.astype(np.int64), w.astype(np.int64)
    exact = (np.einsum("mkij,nkij->mn", xi, wi) if group == 1 else np.einsum("mcij,cij->mc", xi, wi[:, 0]))[:, :, None, None]
    shift = int(np.ceil(np.log2(max(np.abs(exact).max(), 1) / 127)))
    y_scale = np.float32(2.0 ** shift)
    expected = np.clip(np.rint(exact.astype(np.float32) / y_scale) + 128, 0, 255).astype(np.uint8)
    n = w.shape[0]
    inits = [numpy_helper.from_array(v, k) for k, v in {
        "xs": np.float32(1), "xz": np.uint8(0), "w": w, "ws": np.ones(n, np.float32), "wz": np.zeros(n, np.int8),
        "ys": y_scale, "yz": np.uint8(128)}.items()]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]), helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"], group=group), helper.make_node("QuantizeLinear", ["y", "ys", "yz"], ["yq"])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("yq", TensorProto.UINT8, None)], inits)
    sess, ops = _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), tmp_path, f"conv-g{group}")
    assert "QLinearConv" in ops, ops  # the integer kernel ran, not a float fallback
    return sess.run(None, {"x": x.astype(np.float32)})[0], expected


def _pointwise_case(w: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """A 1x1 conv weight [N, K, 1, 1] and worst-case inputs as a batch of 1x1 images."""
    return w, 1, _worst_case_activations(w[:, :, 0, 0].T)[:, :, None, None]


def _depthwise_case(w: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """A depthwise weight [C, 1, k, k] plus two channels of +-127 and, on a k x k input (one output per channel),
    all 255 / 255 where a tap is positive / negative."""
    w = np.concatenate([w, np.full((1, *w.shape[1:]), 127, np.int8), np.full((1, *w.shape[1:]), -127, np.int8)])
    x = np.stack([np.full(w.shape[0:1] + w.shape[2:], 255), np.where(w[:, 0] > 0, 255, 0), np.where(w[:, 0] < 0, 255, 0)])
    return w, w.shape[0], x.astype(np.uint8)


def _conv_model(w: np.ndarray, group: int = 1, weight_type=onnx.TensorProto.INT8) -> onnx.ModelProto:
    """A QDQ Conv whose int8 (or uint8) weight is `w`: what int8_integer_bounds reads."""
    from onnx import TensorProto, helper, numpy_helper

    zero = np.zeros(w.shape[0], np.int8 if weight_type == TensorProto.INT8 else np.uint8)
    inits = [numpy_helper.from_array(w.astype(zero.dtype), "w"), numpy_helper.from_array(np.ones(w.shape[0], np.float32), "ws"),
             numpy_helper.from_array(zero, "wz")]
    nodes = [helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0), helper.make_node("Conv", ["x", "wd"], ["y"], group=group, name="conv")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def test_the_saturation_proof_is_worked_out_from_weights_and_activation_ranges():
    """The proof itself on hand-made weights (no kernel runs): an int16 pair sum of uint8 activations (<= 255) and the
    two largest |weights| of one output channel; depthwise and uint8 weights are widened, only their int32 sum counts."""
    w = np.zeros((2, 8, 1, 1), np.int64)
    w[0, :2, 0, 0] = [64, -64]  # 255 * 128 = 32640: the 7-bit rule's worst case fits
    w[1, :2, 0, 0] = [127, 1]  # one 8-bit weight whose partners are tiny also fits: the bound is per pair, not per weight
    (b,) = int8_integer_bounds(_conv_model(w))
    assert (b.kind, b.depth, b.worst_pair, b.exact) == ("gemm", 8, 32640, True)
    w[1, :2, 0, 0] = [127, 2]  # 255 * 129 = 32895 > 32767
    assert [x.worst_pair for x in saturating_ops(_conv_model(w))] == [32895]
    w8 = np.random.default_rng(0).integers(-127, 128, (32, 256, 1, 1))
    assert not int8_integer_bounds(_conv_model(w8))[0].exact and int8_integer_bounds(_conv_model(w8 * 64 // 127))[0].exact
    dw = np.full((16, 1, 3, 3), -127)  # depthwise at full 8 bits: each product exact in 32 bits, the sum far from 2^31
    (d,) = int8_integer_bounds(_conv_model(dw, group=16))
    assert (d.kind, d.depth, d.worst_pair, d.worst_sum, d.exact) == ("widened", 9, 255 * 127, 9 * 255 * 127, True)
    (u,) = int8_integer_bounds(_conv_model(np.full((4, 64, 1, 1), 255), weight_type=onnx.TensorProto.UINT8))
    assert u.kind == "widened" and u.exact
    assert IntegerBound("big", "gemm", 1 << 20, 1, 2**31).exact is False  # the int32 accumulator is bounded too


def test_int8_exports_are_saturation_free_and_say_their_scheme(lite0_int8, clip_int8):
    """The proof on real exports: fails for 8-bit GEMM weights on any CPU (the property, not this CPU's behaviour)."""
    assert INT8_SCHEMES[DEFAULT_INT8_SCHEME].portable
    for res in (lite0_int8, clip_int8):
        model = onnx.load(res.path)
        bounds = int8_integer_bounds(model)
        assert bounds and not saturating_ops(model), (res.path.name, saturating_ops(model)[:3])
        assert max(b.worst_pair for b in bounds if b.kind == "gemm") > 255 * 64  # tight: the rule is used, not far inside
        peak = int8_gemm_weight_peak(model)
        assert peak is not None and 32 < peak <= 127, (res.path.name, peak)
        assert res.metadata.extra["int8_scheme"] == DEFAULT_INT8_SCHEME == res.details["int8_scheme"]
        assert res.metadata.extra["int8_weight_peak"] == peak
    depthwise = [w for op, w, g in _int8_weights(onnx.load(lite0_int8.path)) if op == "Conv" and g > 1]
    assert depthwise and max(int(np.abs(w.astype(int)).max()) for w in depthwise) == 127  # depthwise keeps 8 bits
    from waste_edge.runtime.model_info import describe_model, model_summary

    recipe = INT8_SCHEMES[DEFAULT_INT8_SCHEME].recipe
    lines = model_summary(describe_model(lite0_int8.path)).splitlines()
    assert f"int8       : static quantisation, scheme {DEFAULT_INT8_SCHEME} ({recipe}), largest GEMM weight {lite0_int8.metadata.extra['int8_weight_peak']}" in lines
    exact = next(line for line in lines if line.startswith("exact on   : "))
    assert exact.startswith("exact on   : every CPU: no u8 x s8 pair sum of its weights can pass 32767 (worst ")
    assert lines[lines.index(exact) + 1].startswith("this cpu   : ")
    assert lite0_int8.metadata.extra["int8_exact_on_every_cpu"] is True and lite0_int8.metadata.extra["int8_recipe"] == recipe


def test_int8_kernels_are_exact_against_an_integer_reference(lite0_int8, clip_int8, tmp_path):
    """The exported weights through ONNX Runtime's integer kernels on this CPU, with worst-case activations,
    equal the exact integer result: no saturation here, hence the same integers on a VNNI or ARM CPU."""
    weights = _int8_weights(onnx.load(lite0_int8.path))
    pointwise = max((w for op, w, g in weights if op == "Conv" and g == 1 and w.shape[2:] == (1, 1)), key=lambda w: w.shape[1])
    depthwise = next(w for op, w, g in weights if op == "Conv" and g > 1)
    for case in (_pointwise_case(pointwise), _depthwise_case(depthwise)):
        got, expected = _qdq_conv_vs_exact(*case, tmp_path)
        np.testing.assert_array_equal(got, expected)
    from onnx import TensorProto, helper, numpy_helper

    w = max((w for op, w, _ in _int8_weights(onnx.load(clip_int8.path)) if op in ("MatMul", "MatMulInteger")), key=lambda w: w.shape[0])
    a = _worst_case_activations(w)
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, list(a.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, None)], [numpy_helper.from_array(w, "b")])
    sess, _ = _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path, "gemm")
    np.testing.assert_array_equal(sess.run(None, {"a": a})[0], a.astype(np.int32) @ w.astype(np.int32))


@pytest.mark.skipif("VPMADDUBSW" not in cpu_info().int8_gemm, reason="the saturation only happens on x86 with AVX2 / AVX-512 and without VNNI")
def test_8bit_gemm_weights_saturate_on_this_cpu(tmp_path):
    """Why GEMM weights get 7 bits: the reference above catches 8-bit ones on an AVX2 CPU without VNNI."""
    w8 = np.random.default_rng(0).integers(-127, 128, (32, 256, 1, 1)).astype(np.int8)
    got, expected = _qdq_conv_vs_exact(*_pointwise_case(w8), tmp_path)
    assert (got != expected).any()
    w7 = (w8.astype(np.int32) * SATURATION_FREE_MAX_WEIGHT // 127).astype(np.int8)
    np.testing.assert_array_equal(*_qdq_conv_vs_exact(*_pointwise_case(w7), tmp_path))


def test_int8_scheme_option_is_checked():
    assert validate_options(get_format("onnx"), {"int8": True, "int8_scheme": "u8u8"}).int8_scheme == "u8u8"
    with pytest.raises(ExportError, match="--int8-scheme only applies to --int8"):
        validate_options(get_format("onnx"), {"int8_scheme": "u8u8"})
    with pytest.raises(FormatError, match="--int8-scheme"):
        validate_options(get_format("engine"), {"int8": True, "int8_scheme": "u8u8"})
    with pytest.raises(QuantizationError, match=f"unknown INT8 scheme 'u4': choose one of {DEFAULT_INT8_SCHEME}, "):
        validate_options(get_format("onnx"), {"int8": True, "int8_scheme": "u4"})
    with pytest.raises(QuantizationError, match="dynamic quantisation has only uint8"):
        quantize_dynamic_encoder(onnx.ModelProto(), "s8s8")
