"""The static INT8 recipe's levers: bias correction, the float stem, and the guard against ONNX Runtime quantising
float layers itself at load time (export/quantize.py, export/bias_correction.py; benchmarks/int8_levers.py measures
what each buys on real photos)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from waste_edge.export.quantize import (
    DEFAULT_INT8_SCHEME,
    INT8_SCHEMES,
    QuantizationError,
    onnxruntime_quantizes_at_load,
    quantize_static_pixels,
)
from waste_edge.runtime.backends.onnxrt import load_session


class Arrays:
    def __init__(self, x: np.ndarray) -> None:
        self.x, self.i = x, 0

    def get_next(self):
        self.i += 1
        return {"pixels": self.x[self.i - 1 : self.i]} if self.i <= len(self.x) else None

    def rewind(self) -> None:
        self.i = 0


def _two_convs(seed: int = 0) -> onnx.ModelProto:
    """pixels [N, 3, 8, 8] in 0..255 -> 3x3 conv (the stem) -> ReLU -> 1x1 conv -> ReLU -> 1x1 conv: a stand-in for an
    encoder whose inputs are not centred, so 7-bit rounding errors of the weights have a mean."""
    rng = np.random.default_rng(seed)
    w1 = (rng.normal(0, 0.02, (16, 3, 3, 3))).astype(np.float32)
    w2 = (rng.normal(0, 0.3, (16, 16, 1, 1))).astype(np.float32)
    w3 = (rng.normal(0, 0.3, (8, 16, 1, 1))).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for n, a in (("w1", w1), ("b1", np.zeros(16, np.float32)), ("w2", w2), ("b2", np.zeros(16, np.float32)),
                                                         ("w3", w3), ("b3", np.zeros(8, np.float32)))]
    nodes = [helper.make_node("Conv", ["pixels", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="stem"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="pointwise"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3", "b3"], ["out"], name="last")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 8, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _mean_error(model: onnx.ModelProto, q: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    f = load_session(model.SerializeToString(), threads=1).run(["out"], {"pixels": x})[0]
    g = load_session(q.SerializeToString(), threads=1).run(["out"], {"pixels": x})[0]
    return np.abs((g - f).mean(axis=(0, 2, 3)))


def test_bias_correction_removes_the_mean_error_of_7bit_weights():
    model = _two_convs()
    x = np.random.default_rng(1).uniform(100, 255, (24, 3, 8, 8)).astype(np.float32)  # bright, far from centred
    base = replace(INT8_SCHEMES["u8s8-7bit"], name="t")
    plain, info = quantize_static_pixels(model, Arrays(x), base)
    corrected, info_bc = quantize_static_pixels(model, Arrays(x), replace(base, bias_correction=True))
    assert "int8_bias_corrected" not in info and info_bc["int8_bias_corrected"] == "3 of 3 convolutions"
    before, after = _mean_error(model, plain, x), _mean_error(model, corrected, x)
    assert after.mean() < 0.3 * before.mean(), (before, after)
    # only int32 biases moved: the integer weights (and so the saturation proof) are those of the plain model
    w = lambda m: {t.name: numpy_helper.to_array(t).tobytes() for t in m.graph.initializer if t.data_type == TensorProto.INT8}  # noqa: E731
    assert w(plain) == w(corrected)


def test_float_stem_keeps_the_first_conv_and_its_input_float():
    model = _two_convs()
    x = np.random.default_rng(2).uniform(0, 255, (8, 3, 8, 8)).astype(np.float32)
    q, info = quantize_static_pixels(model, Arrays(x), replace(INT8_SCHEMES["u8s8-7bit"], name="t", float_stem=True))
    producer = {o: n for n in q.graph.node for o in n.output}
    stem = next(n for n in q.graph.node if n.name == "stem")
    assert stem.input[0] == "pixels" and stem.input[1] == "w1"  # raw pixels in, float weights: no Q/DQ around it
    pointwise = next(n for n in q.graph.node if n.name == "pointwise")
    assert producer[pointwise.input[1]].op_type == "DequantizeLinear"  # the rest is quantised
    assert onnxruntime_quantizes_at_load(q) == [] and "float stem" in info["int8_recipe"]


def test_a_float_conv_after_dequantize_is_refused(tmp_path):
    """Excluding an inner conv leaves DequantizeLinear -> float Conv: ONNX Runtime's WeightBiasQuantization would give
    it 8-bit per-tensor weights at load time (seen in its optimised graph), so the recipe refuses such a graph."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model = _two_convs()
    x = np.random.default_rng(3).uniform(0, 255, (8, 3, 8, 8)).astype(np.float32)
    onnx.save(model, tmp_path / "m.onnx")
    quantize_static(str(tmp_path / "m.onnx"), str(tmp_path / "q.onnx"), Arrays(x), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, reduce_range=True, nodes_to_exclude=["pointwise"])
    q = onnx.load(tmp_path / "q.onnx")
    assert onnxruntime_quantizes_at_load(q) == ["pointwise"]
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(q.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    added = [t for t in onnx.load(tmp_path / "optimised.onnx").graph.initializer if t.name.startswith("pointwise_weight")]
    assert added, "ONNX Runtime no longer quantises such a conv at load: the guard may be relaxed"


def test_the_default_recipe_is_portable_and_says_what_it_does():
    s = INT8_SCHEMES[DEFAULT_INT8_SCHEME]
    assert DEFAULT_INT8_SCHEME == "u8s8-7bit-bc"
    assert s.portable and s.reduce_range and s.bias_correction and not s.float_stem
    assert s.recipe == "minmax calibration, bias correction"
    with pytest.raises(QuantizationError, match="unknown calibration"):
        quantize_static_pixels(_two_convs(), Arrays(np.zeros((1, 3, 8, 8), np.float32)), replace(s, name="t", calibration="median"))


class SliceableArrays(Arrays):
    """A reader onnxruntime can calibrate a slice at a time (`len`, `set_range`), recording the slices it asked for."""

    def __init__(self, x: np.ndarray) -> None:
        super().__init__(x)
        self.end, self.slices, self.images_read = len(x), [], 0

    def __len__(self) -> int:
        return len(self.x)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.i, self.end = start_index, end_index
        self.slices.append((start_index, end_index))

    def get_next(self):
        feed = super().get_next() if self.i < self.end else None
        self.images_read += feed is not None
        return feed

    def rewind(self) -> None:
        self.i, self.end = 0, len(self.x)


@pytest.mark.parametrize("calibration", ["minmax", "percentile"])
def test_a_sliceable_reader_is_calibrated_in_chunks_and_bias_correction_then_sees_every_image(calibration):
    """Calibration holds every intermediate tensor of the images it reads at once: a reader that can be sliced is read
    CALIB_CHUNK images or fewer at a time (40 images: 4 slices of 10), covering every image once; bias correction
    afterwards rewinds and reads all 40 again. MinMax in chunks gives the very model one pass gives (a min of the
    chunks' mins; onnxruntime's own CalibMaxIntermediateOutputs would drop all but the last chunk)."""
    from waste_edge.export.quantize import CALIB_CHUNK

    x = np.random.default_rng(4).uniform(0, 255, (40, 3, 8, 8)).astype(np.float32)
    x[3] *= 1.5  # the largest activations come from an image of the first chunk
    reader = SliceableArrays(x)
    scheme = replace(INT8_SCHEMES["u8s8-7bit-bc"], name="t", calibration=calibration)
    q, info = quantize_static_pixels(_two_convs(), reader, scheme)
    assert CALIB_CHUNK >= 10 and reader.slices == [(0, 10), (10, 20), (20, 30), (30, 40)]
    assert info["int8_bias_corrected"] == "3 of 3 convolutions"
    assert reader.images_read == 2 * 40
    if calibration == "minmax":
        whole, _ = quantize_static_pixels(_two_convs(), Arrays(x), scheme)
        assert q.SerializeToString() == whole.SerializeToString()


def _qdq_add(sa: float, sb: float, sc: float) -> onnx.ModelProto:
    """x, y -> Q -> DQ each -> Add -> Q -> DQ: what ONNX Runtime runs as one QLinearAdd."""
    inits = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("sa", sa), ("sb", sb), ("sc", sc))]
    inits += [numpy_helper.from_array(np.array(z, np.uint8), n) for n, z in (("za", 3), ("zb", 7), ("zc", 11))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sa", "za"], ["xq"]), helper.make_node("DequantizeLinear", ["xq", "sa", "za"], ["xd"]),
             helper.make_node("QuantizeLinear", ["y", "sb", "zb"], ["yq"]), helper.make_node("DequantizeLinear", ["yq", "sb", "zb"], ["yd"]),
             helper.make_node("Add", ["xd", "yd"], ["s"], name="add"),
             helper.make_node("QuantizeLinear", ["s", "sc", "zc"], ["sq"]), helper.make_node("DequantizeLinear", ["sq", "sc", "zc"], ["out"])]
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [4])  # noqa: E731
    return helper.make_model(helper.make_graph(nodes, "add", [vi("x"), vi("y")], [vi("out")], inits))


def test_scale_ratios_that_are_simple_fractions_make_an_add_tie_at_one_half():
    """The scales of a build with ranges rounded to 6 significant bits (ratios 16/27 and 95/108 to the output's):
    about 1 uint8 input pair in 108 requantises to a .5 tie, rounded differently on x86 and Arm; generic scales
    (the same Add of the shipped default model) give only chance near-ties (about 1e-4)."""
    from waste_edge.export.quantize import add_tie_fractions

    tied = add_tie_fractions(_qdq_add(0.05 * 16 / 27, 0.05 * 95 / 108, 0.05))
    assert list(tied) == ["add"] and 1 / 130 < tied["add"] < 1 / 90
    assert add_tie_fractions(_qdq_add(0.05 * 0.59478631, 0.05 * 0.87469212, 0.05))["add"] <= 1e-3
