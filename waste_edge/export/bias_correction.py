"""Bias correction of a static-QDQ encoder (Nagel et al., "Data-Free Quantization", 2019, section 4.2, empirical form).

Why: rounding a convolution's weights to 7 bits leaves an error dW = DQ(W_q) - W whose effect on an output channel
has a mean, dW . E[x], because the inputs are not centred: the activations after ReLU6 are >= 0, and the
first layer sees raw pixels 0..255 (its normalisation is folded into the weights). That mean shifts every output
channel by a constant and the shifts add up through the network: with 7-bit weights the Lite0 embedding of a TEST
photo had a cosine as low as 0.86 with the fp32 one. Subtracting dW . E[x] from the bias, with E[x] measured on the
calibration images through the fp32 encoder, removes it (benchmarks/README.md "INT8 levers").

The correction only rewrites the int32 biases of the QDQ graph (same scale: input scale x weight scale), so the
integer weights, their bounds and the kernels ONNX Runtime picks are unchanged.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

QUANTIZED_SUFFIX = "_quantized"  # onnxruntime's names: <weight>_quantized, <weight>_scale; <bias>_quantized, <bias>_quantized_scale


@dataclass(frozen=True)
class QuantizedConv:
    """One Conv of a QDQ graph whose input, weight and bias all arrive through DequantizeLinear."""

    node: str
    float_weight: str  # the initializer name in the fp32 graph
    weight_q: str
    weight_scale: str
    bias_q: str
    bias_scale: str
    input: str  # the float tensor quantised for this conv: the same name in the fp32 graph
    group: int


def quantized_convs(qdq: onnx.ModelProto) -> list[QuantizedConv]:
    producer = {o: n for n in qdq.graph.node for o in n.output}
    found = []
    for n in qdq.graph.node:
        if n.op_type != "Conv" or len(n.input) < 3:
            continue
        x, w, b = (producer.get(i) for i in n.input[:3])
        if not all(p is not None and p.op_type == "DequantizeLinear" for p in (x, w, b)):
            continue
        q = producer.get(x.input[0])
        if q is None or q.op_type != "QuantizeLinear" or not w.input[0].endswith(QUANTIZED_SUFFIX):
            continue
        found.append(QuantizedConv(n.name, w.input[0][: -len(QUANTIZED_SUFFIX)], w.input[0], w.input[1], b.input[0], b.input[1],
                                   q.input[0], next((int(a.i) for a in n.attribute if a.name == "group"), 1)))
    return found


def channel_means(fp32: onnx.ModelProto, tensors: list[str], batches: Iterable[dict[str, np.ndarray]], threads: int = 2) -> dict[str, np.ndarray]:
    """Per-channel mean of each NCHW `tensor` of the fp32 graph over every image and pixel of `batches`."""
    from waste_edge.runtime.backends.onnxrt import load_session

    model = copy.deepcopy(fp32)
    outputs = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors if t not in outputs)
    sess = load_session(model.SerializeToString(), threads=threads, name="fp32 encoder (bias correction)")
    sums = {t: np.zeros(0) for t in tensors}
    count = dict.fromkeys(tensors, 0)
    for feed in batches:
        for t, v in zip(tensors, sess.run(tensors, feed)):
            s = v.astype(np.float64).sum(axis=(0, 2, 3))
            sums[t] = s if sums[t].size == 0 else sums[t] + s
            count[t] += v.shape[0] * v.shape[2] * v.shape[3]
    if not all(count.values()):
        raise ValueError("bias correction needs at least one calibration image")
    return {t: sums[t] / count[t] for t in tensors}


def correct_biases(qdq: onnx.ModelProto, fp32: onnx.ModelProto, batches: Iterable[dict[str, np.ndarray]], threads: int = 2) -> tuple[onnx.ModelProto, int, int]:
    """`qdq` with every quantised conv's int32 bias moved by -dW . E[x]; returns the model, how many convs were
    corrected and how many were found (a correction an int32 bias cannot hold leaves that conv as it was).

    For a depthwise conv each output channel reads one input channel: the shift is the sum of its taps' errors times
    that channel's mean (padding at the borders is ignored: it is a per-image-border effect, not a mean)."""
    model = copy.deepcopy(qdq)
    inits = {t.name: t for t in model.graph.initializer}
    weights = {t.name: t for t in fp32.graph.initializer}
    convs = [c for c in quantized_convs(model) if c.float_weight in weights]
    means = channel_means(fp32, sorted({c.input for c in convs}), batches, threads)
    corrected_convs = 0
    for c in convs:
        w_q = numpy_helper.to_array(inits[c.weight_q]).astype(np.float64)
        scale = numpy_helper.to_array(inits[c.weight_scale]).astype(np.float64)
        error = w_q * scale.reshape(-1, *[1] * (w_q.ndim - 1)) - numpy_helper.to_array(weights[c.float_weight]).astype(np.float64)
        mean = means[c.input]
        shift = error.sum(axis=(1, 2, 3)) * mean if c.group > 1 else np.einsum("nchw,c->n", error, mean)
        b_scale = numpy_helper.to_array(inits[c.bias_scale]).astype(np.float64)
        b_q = numpy_helper.to_array(inits[c.bias_q]).astype(np.float64)
        corrected = np.round(b_q - shift / b_scale)
        if np.abs(corrected).max() < 2**31:
            inits[c.bias_q].CopyFrom(numpy_helper.from_array(corrected.astype(np.int32), c.bias_q))
            corrected_convs += 1
    return model, corrected_convs, len(convs)
