"""INT8 (dynamic for ViTs, static QDQ for conv nets) and FP16 variants: structure and agreement."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

from waste_edge.export.exporter import export
from waste_edge.export.parity import TOLERANCES, run_parity
from waste_edge.export.quantize import QuantizationError, calibration_images, choose_int8_method


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


def test_fp16_keeps_normalisation_in_fp32_and_agrees(clip_run, export_images, tmp_path):
    res = export(clip_run, "onnx", out=tmp_path / "clip-fp16.onnx", half=True, dynamic=True, progress=False)
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
