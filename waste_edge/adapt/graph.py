"""Find the linear head inside a fused model and write a copy of the graph with new head constants.

The head of a fused model (ARCHITECTURE.md, contract 2) is one `Gemm` that reads the tensor named `embedding`
(the features the head sees) and feeds `Softmax` -> `probabilities`; its weight [D, K] and bias [K] are
fp32 initializers in every variant (INT8 quantises only the encoder). Refitting the head therefore changes
two constant tensors and nothing else: the copy keeps every node, name and the preprocessing bit for bit,
so it runs on any backend the original ran on.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.metadata import OUTPUT_EMBEDDING, PREFIX, ModelMetadata


class AdaptError(WasteEdgeError):
    """The model cannot be adapted as asked (no embedding output, no fp32 head, bad labels, bad paths)."""


@dataclass
class HeadConstants:
    """The head's softmax form: probabilities = softmax(features @ weight + bias)."""

    weight: np.ndarray  # [D, K] float32
    bias: np.ndarray  # [K] float32

    def logits(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, np.float64) @ self.weight.astype(np.float64) + self.bias.astype(np.float64)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        z = self.logits(features)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def sha256(self, classes: list[str], normalization: str) -> str:
        """Names this exact head in metadata (`head_sha256` of an adapted model)."""
        doc = {"classes": classes, "weight": self.weight.astype(np.float64).tolist(),
               "bias": self.bias.astype(np.float64).tolist(), "normalization": normalization}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class HeadLocation:
    node: onnx.NodeProto
    weight_name: str
    bias_name: str
    constants: HeadConstants


def read_metadata(model: onnx.ModelProto) -> ModelMetadata:
    return ModelMetadata.from_props({p.key: p.value for p in model.metadata_props})


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def find_head(model: onnx.ModelProto, embedding: str = OUTPUT_EMBEDDING) -> HeadLocation:
    """The Gemm that reads `embedding`, with its fp32 weight and bias initializers (AdaptError otherwise)."""
    gemms = [n for n in model.graph.node if n.op_type == "Gemm" and n.input and n.input[0] == embedding]
    if len(gemms) != 1:
        raise AdaptError(f"expected one Gemm reading {embedding!r} (the head), found {len(gemms)}: not a fused waste-edge model?")
    node = gemms[0]
    attrs = _attrs(node)
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or len(node.input) != 3:
        raise AdaptError(f"head Gemm {node.name!r} has attributes {attrs}: only a plain x @ W + b head can be refitted")
    inits = {t.name: t for t in model.graph.initializer}
    missing = [n for n in node.input[1:] if n not in inits]
    if missing:
        raise AdaptError(f"the head's weights {missing} are not fp32 constants (a quantised head?): export the model again; INT8 keeps the head fp32")
    w = numpy_helper.to_array(inits[node.input[1]])
    b = numpy_helper.to_array(inits[node.input[2]])
    if attrs.get("transB", 0):
        w = w.T
    if w.dtype != np.float32 or b.dtype != np.float32 or w.ndim != 2 or b.shape != (w.shape[1],):
        raise AdaptError(f"the head's constants have dtype {w.dtype} / {b.dtype} and shapes {w.shape} / {b.shape}; expected fp32 [D, K] and [K]")
    users = [n.name for n in model.graph.node for i in n.input if i in (node.input[1], node.input[2]) and n is not node]
    if users:
        raise AdaptError(f"the head's constants are shared with other nodes ({users}); cannot swap them alone")
    return HeadLocation(node, node.input[1], node.input[2], HeadConstants(w, b))


def swap_head(model: onnx.ModelProto, head: HeadConstants, metadata: ModelMetadata) -> onnx.ModelProto:
    """A copy of `model` with `head`'s constants in place of the old ones and `metadata` as its waste-edge props."""
    new = copy.deepcopy(model)
    loc = find_head(new)
    old = loc.constants
    if head.weight.shape != old.weight.shape or head.bias.shape != old.bias.shape:
        raise AdaptError(f"new head shapes {head.weight.shape}/{head.bias.shape} differ from the model's {old.weight.shape}/{old.bias.shape}")
    w = head.weight.astype(np.float32)
    if _attrs(loc.node).get("transB", 0):
        w = w.T
    for t in new.graph.initializer:
        if t.name == loc.weight_name:
            t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w), loc.weight_name))
        elif t.name == loc.bias_name:
            t.CopyFrom(numpy_helper.from_array(head.bias.astype(np.float32), loc.bias_name))
    others = {p.key: p.value for p in new.metadata_props if not p.key.startswith(PREFIX)}
    onnx.helper.set_model_props(new, {**others, **metadata.to_props()})  # replaces every prop
    return new


def load_model(path: str | Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError, OSError: one line for the user
        raise AdaptError(f"{path}: cannot read the ONNX model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
