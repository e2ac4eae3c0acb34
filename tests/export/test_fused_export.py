"""Fused export (ARCHITECTURE.md, contract 2): structure, metadata, batch handling, the head oracle and fp32 parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.helpers import synthetic_rgb
from waste_edge.export.exporter import export
from waste_edge.export.fused import EMBEDDING, ExportError, with_stage_outputs
from waste_edge.export.parity import run_parity
from waste_edge.runtime.formats import FormatError
from waste_edge.runtime.metadata import ModelMetadata
from waste_edge.train.runs import open_run


def _session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _op_types(graph: onnx.GraphProto) -> set[str]:
    """Op types of a graph and its subgraphs (the CLIP resize lives in an If branch)."""
    ops = set()
    for n in graph.node:
        ops.add(n.op_type)
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                ops |= _op_types(a.g)
    return ops


@pytest.mark.parametrize("which", ["clip_onnx", "lite0_onnx"])
def test_fused_graph_is_valid_and_carries_the_contract(which, request):
    path = request.getfixturevalue(which)
    run = open_run(request.getfixturevalue(which.replace("_onnx", "_run")))
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["image"]
    inp = model.graph.input[0].type.tensor_type
    assert inp.elem_type == onnx.TensorProto.UINT8 and len(inp.shape.dim) == 4 and inp.shape.dim[3].dim_value == 3
    assert [o.name for o in model.graph.output] == ["probabilities", "label"]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [onnx.TensorProto.FLOAT, onnx.TensorProto.INT64]
    # TensorRT cannot run ai.onnx.ml operators: the head must be plain ONNX.
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    assert len({o.domain for o in model.opset_import}) == len(model.opset_import)
    # CLIP resizes with ONNX Resize (to 1 grey level); box_crop with Pillow's arithmetic rebuilt from MatMuls.
    assert {"Gemm", "Softmax", "ArgMax", "Resize" if "clip" in which else "MatMul"} <= _op_types(model.graph)
    meta = ModelMetadata.from_props({p.key: p.value for p in model.metadata_props})
    assert meta.classes == run.classes and meta.display_names == run.display_names
    assert meta.head_sha256 == run.head.sha256() and meta.encoder == run.encoder_id
    assert meta.channel_order == "BGR" and meta.variant == "fp32" and meta.input_size is None
    assert meta.preprocess["resize_mode"] == ("shortest" if "clip" in which else "box_crop")
    assert meta.extra["normalization"] == "folded"


@pytest.mark.parametrize("which", ["clip", "lite0"])
def test_fp32_parity_passes_against_the_reference_pipeline(which, request, export_images):
    report = run_parity(request.getfixturevalue(f"{which}_onnx"), request.getfixturevalue(f"{which}_run"), export_images, progress=False)
    assert report.n == 8 and report.passed, report.summary()
    assert report.agreement == 1.0 and report.max_abs_dp <= 1e-3
    assert report.embedding_cosine_min > 0.9999
    assert report.preprocess_max_grey <= (1.0 if which == "clip" else 0.0)
    assert report.worst is not None and report.worst.embedding_cosine is not None


def test_dynamic_batch_gives_the_same_rows_as_single_frames(clip_onnx):
    sess = _session(clip_onnx)
    frames = np.stack([synthetic_rgb("B" if i % 2 else "N", 50 + i, (96, 72)) for i in range(7)])
    singles = np.concatenate([sess.run(["probabilities"], {"image": frames[i : i + 1]})[0] for i in range(7)])
    for n in (1, 2, 7):
        probs, labels = sess.run(None, {"image": frames[:n]})
        assert probs.shape == (n, 2) and labels.shape == (n,) and labels.dtype == np.int64
        np.testing.assert_allclose(probs, singles[:n], atol=1e-6)
        np.testing.assert_array_equal(labels, probs.argmax(axis=1))


def test_fixed_batch_and_imgsz_are_declared(clip_run, tmp_path):
    res = export(clip_run, "onnx", out=tmp_path / "fixed.onnx", batch=2, imgsz=(72, 96), progress=False)
    model = onnx.load(res.path)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 72, 96, 3]
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [2, 2]
    assert res.metadata.input_size == [72, 96]
    frames = np.stack([synthetic_rgb("B", 1, (96, 72)), synthetic_rgb("N", 2, (96, 72))])
    probs, _ = _session(model).run(None, {"image": frames})
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    with pytest.raises(Exception):  # a 1-frame batch violates the declared shape
        _session(model).run(None, {"image": frames[:1]})


def test_head_equals_the_skl2onnx_oracle(clip_onnx, clip_run):
    """An independent conversion of the same sklearn head (skl2onnx, zipmap=False) on the same features."""
    from skl2onnx import to_onnx

    run = open_run(clip_run)
    fused = onnx.load(clip_onnx)
    head_only = onnx.utils.Extractor(fused).extract_model([EMBEDDING], ["probabilities"])
    feats = np.random.default_rng(0).normal(size=(64, run.head.dim)).astype(np.float32) * 3
    oracle = to_onnx(run.head.to_sklearn(), feats[:1], options={"zipmap": False}, target_opset={"": 18, "ai.onnx.ml": 3})
    o_sess = _session(oracle)
    want = o_sess.run([o_sess.get_outputs()[1].name], {o_sess.get_inputs()[0].name: feats})[0]
    got = _session(head_only).run(None, {EMBEDDING: feats})[0]
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got, run.head.predict_proba(feats), atol=1e-6)


def test_l2_normalised_head_matches_sklearn_on_normalised_features(lite0_onnx, lite0_run):
    run = open_run(lite0_run)
    assert run.head.l2_normalize
    head_only = onnx.utils.Extractor(onnx.load(lite0_onnx)).extract_model([EMBEDDING], ["probabilities"])
    feats = np.random.default_rng(1).normal(size=(16, run.head.dim)).astype(np.float32) * 1e-8
    want = run.head.to_sklearn().predict_proba(run.head.normalise(feats))
    np.testing.assert_allclose(_session(head_only).run(None, {EMBEDDING: feats})[0], want, atol=1e-6)


def test_stage_outputs_copy_exposes_pixels_and_embedding(clip_onnx):
    staged = with_stage_outputs(onnx.load(clip_onnx))
    names = [o.name for o in staged.graph.output]
    assert names == ["probabilities", "label", "pixels", EMBEDDING]
    out = _session(staged).run(None, {"image": synthetic_rgb("B", 3, (120, 90))[None]})
    assert out[2].shape == (1, 3, 224, 224) and out[2].min() >= 0 and out[2].max() <= 255


def test_rgb_channel_order_export(clip_run, clip_onnx, tmp_path):
    rgb = synthetic_rgb("N", 4, (130, 100))
    res = export(clip_run, "onnx", out=tmp_path / "rgb.onnx", channel_order="RGB", dynamic=True, progress=False)
    assert res.metadata.channel_order == "RGB"
    p_rgb = _session(res.path).run(["probabilities"], {"image": rgb[None]})[0]
    p_bgr = _session(clip_onnx).run(["probabilities"], {"image": np.ascontiguousarray(rgb[..., ::-1])[None]})[0]
    np.testing.assert_allclose(p_rgb, p_bgr, atol=1e-6)


@pytest.mark.parametrize(
    "fmt, opts, match",
    [
        ("onnx", {"workspace": 2.0}, "does not support --workspace"),
        ("engine", {"opset": 18}, "does not support --opset"),
        ("tflite", {}, "unknown format"),
    ],
)
def test_option_a_format_does_not_support_is_a_clear_error(clip_run, fmt, opts, match):
    with pytest.raises(FormatError, match=match):
        export(clip_run, fmt, progress=False, **opts)


@pytest.mark.parametrize(
    "opts, match",
    [
        ({"half": True, "int8": True}, "exclusive"),
        ({"calib": Path(".")}, "only applies to --int8"),
        ({"opset": 17}, "opset >= 18"),
        ({"out": Path("model.engine")}, "must end in .onnx"),
        ({"channel_order": "YUV"}, "channel-order"),
    ],
)
def test_bad_option_combinations_are_rejected_before_any_work(clip_run, opts, match):
    with pytest.raises(ExportError, match=match):
        export(clip_run, "onnx", progress=False, **opts)


@pytest.mark.slow
def test_vit_b32_random_weights_export_and_parity(tmp_path, export_images):
    from tests.export.conftest import make_run

    run = make_run(tmp_path / "vitb32", "clip:ViT-B-32/none", export_images)
    res = export(run, "onnx", dynamic=True, progress=False)
    report = run_parity(res.path, run, export_images, limit=4, progress=False)
    assert report.passed, report.summary()
    frames = np.stack([synthetic_rgb("B", i, (64, 48)) for i in range(2)])
    assert _session(res.path).run(["probabilities"], {"image": frames})[0].shape == (2, 2)
