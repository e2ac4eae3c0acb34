"""Finding the head in a fused graph and swapping its constants into a copy."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from waste_edge.adapt.graph import AdaptError, HeadConstants, find_head, read_metadata, swap_head
from waste_edge.runtime.metadata import PREFIX


def run(model: onnx.ModelProto, frame: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(["probabilities", "embedding"], {"image": frame[None]})


def test_find_and_swap_keep_everything_but_the_two_constants(tiny_model):
    model = onnx.load(tiny_model)
    loc = find_head(model)
    assert loc.constants.weight.shape == (3, 2) and loc.constants.bias.shape == (2,)
    new_head = HeadConstants(np.arange(6, dtype=np.float32).reshape(3, 2) / 100, np.array([0.5, -0.5], np.float32))
    meta = read_metadata(model)
    meta.head_sha256 = "f" * 64
    model.metadata_props.add(key="other.key", value="kept")
    new = swap_head(model, new_head, meta)
    frame = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    probs, emb = run(new, frame)
    np.testing.assert_allclose(probs, new_head.predict_proba(emb), atol=1e-6)
    old_probs, old_emb = run(model, frame)
    np.testing.assert_array_equal(emb, old_emb)  # the features (everything before the head) are untouched
    np.testing.assert_allclose(old_probs, loc.constants.predict_proba(old_emb), atol=1e-6)
    assert [n.op_type for n in new.graph.node] == [n.op_type for n in model.graph.node]
    props = {p.key: p.value for p in new.metadata_props}
    assert props["other.key"] == "kept" and props[PREFIX + "head_sha256"] == "f" * 64
    assert find_head(model).constants.bias.tolist() == loc.constants.bias.tolist()  # the source proto is not modified


def test_a_quantised_or_missing_head_is_refused(tiny_model):
    model = onnx.load(tiny_model)
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    # Make the weight come out of a DequantizeLinear, as a fully quantised graph would.
    w = next(t for t in model.graph.initializer if t.name == gemm.input[1])
    q = numpy_helper.from_array(np.zeros((3, 2), np.int8), "Wq")
    model.graph.initializer.remove(w)
    model.graph.initializer.extend([q, numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "z")])
    model.graph.node.insert(0, helper.make_node("DequantizeLinear", ["Wq", "s", "z"], [gemm.input[1]]))
    with pytest.raises(AdaptError, match="not fp32 constants"):
        find_head(model)
    gemm.input[0] = "something_else"
    with pytest.raises(AdaptError, match="expected one Gemm reading 'embedding'"):
        find_head(model)


def test_shape_mismatch_refused(tiny_model):
    model = onnx.load(tiny_model)
    with pytest.raises(AdaptError, match="differ"):
        swap_head(model, HeadConstants(np.zeros((4, 2), np.float32), np.zeros(2, np.float32)), read_metadata(model))
