"""ViT graph fusions before INT8 (`export/transformer_opt.py`): they must really match the open_clip graph
(counted per op type), leave the numbers alone in fp32, and step aside on graphs they do not fit."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from waste_edge.export.transformer_opt import _run, infer_num_heads, optimize_vit_encoder


@pytest.fixture(scope="module")
def tiny_vit_encoder(clip_run) -> onnx.ModelProto:
    """The tiny CLIP run's encoder exactly as the exporter writes it (2 layers, width 64, 2 heads, patch 32)."""
    from waste_edge.export.fused import export_encoder
    from waste_edge.train.encoders import create_encoder
    from waste_edge.train.runs import open_run

    model, _ = export_encoder(create_encoder(open_run(clip_run).encoder_id))
    return model


def test_fusions_match_every_layer_of_the_open_clip_graph(tiny_vit_encoder):
    assert infer_num_heads(tiny_vit_encoder) == 2
    fused, report = optimize_vit_encoder(tiny_vit_encoder, 2, patch_matmul=True)
    assert report.applied, report.reason
    ops = Counter(n.op_type for n in fused.graph.node)
    assert report.layers == 2 and ops["Attention"] == 2 and ops["Softmax"] == 0
    assert ops["SkipLayerNormalization"] >= 3 and ops["BiasGelu"] == 2  # residual + LayerNorm pairs, GELU per layer
    assert ops["Conv"] == 0 and report.fused_ops["patch embedding as MatMul"] == 1
    assert report.fused_ops["class-token-only last layer"] == 1
    assert ops["Transpose"] <= 2 and len(fused.graph.node) < len(tiny_vit_encoder.graph.node) / 3
    x = np.random.default_rng(1).uniform(0, 255, size=(3, 3, 224, 224)).astype(np.float32)
    ref, got = _run(tiny_vit_encoder, x), _run(fused, x)
    assert np.abs(ref - got).max() <= 1e-4 * np.abs(ref).max()


def test_a_wrong_head_count_is_caught_by_the_numeric_check(tiny_vit_encoder):
    fused, report = optimize_vit_encoder(tiny_vit_encoder, 4)  # 4 heads of 16 instead of 2 of 32: other numbers
    assert not report.applied and "differs" in report.reason
    assert fused is tiny_vit_encoder


def test_graphs_without_vit_attention_are_left_alone():
    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.eye(4, dtype=np.float32).ravel())
    model = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["pixels", "w"], ["embedding"])], "g", [x], [y], [w]))
    assert infer_num_heads(model) is None
    same, report = optimize_vit_encoder(model, 2)
    assert same is model and not report.applied and "no attention" in report.reason
