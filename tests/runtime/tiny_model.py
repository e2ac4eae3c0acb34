"""Tiny fused models (ARCHITECTURE.md, contract 2) built with onnx.helper, so runtime tests need neither export nor torch.

Graph: image uint8 NHWC -> Cast -> ReduceMean over H, W -> Gemm -> Softmax -> probabilities, and ArgMax
-> label. The weights make class 0 ("B") win for reddish/warm pictures and class 1 ("N") for bluish/cool
ones, reading the channels in the order the metadata declares: a model fed the wrong channel order gives
the opposite answer, which is what the channel-order tests rely on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from waste_edge.data.labels import display_names
from waste_edge.runtime.metadata import INPUT_NAME, OUTPUT_EMBEDDING, OUTPUT_LABEL, OUTPUT_PROBABILITIES, ModelMetadata


def tiny_metadata(classes: Sequence[str] = ("B", "N"), channel_order: str = "RGB", input_size: Sequence[int] | None = None,
                  with_embedding: bool = False) -> ModelMetadata:
    return ModelMetadata(
        classes=list(classes),
        display_names=display_names(list(classes)),
        channel_order=channel_order,
        preprocess={"kind": "mean-colour", "note": "test model"},
        encoder="test:mean-colour",
        head_sha256="0" * 64,
        toolkit_version="0.1.0",
        variant="fp32",
        input_size=list(input_size) if input_size else None,
        embedding={"output": OUTPUT_EMBEDDING, "dim": 3, "normalization": "none"} if with_embedding else None,
    )


def make_fused_model(
    path: Path,
    *,
    classes: Sequence[str] = ("B", "N"),
    channel_order: str = "RGB",
    input_size: Sequence[int] | None = None,
    batch: int | None = None,
    scale: float = 8.0,
    metadata: bool = True,
    input_name: str = INPUT_NAME,
    input_dtype: int = TensorProto.UINT8,
    with_embedding: bool = False,
    nan_above: float | None = None,
) -> Path:
    """Write a tiny fused model to `path` and return it. `with_embedding`: the mean colour (the head's input) is
    also the output `embedding`, as `export --with-embedding` does for a real encoder. `nan_above`: the model
    answers NaN for frames whose mean red (0-255) is above it: it passes probe frames (mid grey) and fails on
    warm frames, as a model that goes wrong only on some inputs would."""
    k = len(classes)
    red, blue = (0, 2) if channel_order == "RGB" else (2, 0)
    w = np.zeros((3, k), dtype=np.float32)
    with np.errstate(over="ignore"):  # scale=1e300: weights that overflow float32 (a head exported wrong) are a case too
        w[red, 0], w[blue, 0] = scale / 255.0, -scale / 255.0
        w[red, 1], w[blue, 1] = -scale / 255.0, scale / 255.0
    b = np.zeros(k, dtype=np.float32)
    h, wd = (input_size if input_size else ("H", "W"))
    n = batch if batch else "N"
    image = helper.make_tensor_value_info(input_name, input_dtype, [n, h, wd, 3])
    probs = helper.make_tensor_value_info(OUTPUT_PROBABILITIES, TensorProto.FLOAT, [n, k])
    label = helper.make_tensor_value_info(OUTPUT_LABEL, TensorProto.INT64, [n])
    feats = OUTPUT_EMBEDDING if with_embedding else "mean"
    nodes = [
        # named with the stage prefixes a real export gives (pre/, head/): the benchmark's profile groups by them
        helper.make_node("Cast", [input_name], ["x"], name="pre/cast", to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x"], [feats], name="pre/mean", axes=[1, 2], keepdims=0),
        helper.make_node("Gemm", [feats, "W", "b"], ["logits" if nan_above is None else "raw_logits"], name="head/gemm"),
        helper.make_node("Softmax", ["logits"], [OUTPUT_PROBABILITIES], name="head/softmax", axis=1),
        helper.make_node("ArgMax", [OUTPUT_PROBABILITIES], [OUTPUT_LABEL], name="head/argmax", axis=1, keepdims=0),
    ]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")]
    if nan_above is not None:  # logits + 0 * sqrt(nan_above - red): NaN exactly where red > nan_above
        inits += [numpy_helper.from_array(np.array([red], np.int64), "red_index"), numpy_helper.from_array(np.array(nan_above, np.float32), "nan_above"),
                  numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
        nodes[2:2] = [
            helper.make_node("Gather", [feats, "red_index"], ["red"], name="head/red", axis=1),
            helper.make_node("Sub", ["nan_above", "red"], ["room"], name="head/room"),
            helper.make_node("Sqrt", ["room"], ["root"], name="head/root"),
            helper.make_node("Mul", ["root", "zero"], ["poison"], name="head/poison"),
            helper.make_node("Add", ["raw_logits", "poison"], ["logits"], name="head/logits"),
        ]
        nodes.insert(2, nodes.pop(7))  # the Gemm first
    outputs = [probs, label] + ([helper.make_tensor_value_info(OUTPUT_EMBEDDING, TensorProto.FLOAT, [n, 3])] if with_embedding else [])
    graph = helper.make_graph(nodes, "tiny_fused", [image], outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="waste-edge-tests")
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, tiny_metadata(classes, channel_order, input_size, with_embedding).to_props())
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def expected_probs(frame_rgb: np.ndarray, scale: float = 8.0, k: int = 2) -> np.ndarray:
    """What the tiny model computes for an RGB frame read in the right order (numpy reference)."""
    mean = frame_rgb.reshape(-1, 3).astype(np.float64).mean(axis=0)
    d = scale * (mean[0] - mean[2]) / 255.0
    logits = np.zeros(k)
    logits[0], logits[1] = d, -d
    e = np.exp(logits - logits.max())
    return e / e.sum()


def write_sidecar(engine: Path, *, tensorrt_version: str = "10.3.0", compute_capability: str = "8.9", meta: ModelMetadata | None = None) -> Path:
    side = Path(str(engine) + ".json")
    side.write_text(json.dumps({"metadata": (meta or tiny_metadata()).to_json(), "tensorrt_version": tensorrt_version, "compute_capability": compute_capability}))
    return side
