"""A tiny helper to write ONNX graphs by hand with readable, collision-free tensor names.

The preprocessing and the head of the fused model are a few dozen standard ops each; writing them with
`onnx.helper` directly (rather than tracing torch code) keeps them exact, opset-controlled and free of the
exporter's quirks. Every name gets the builder's prefix so that graphs can be merged without clashes.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# The IR version every piece of a fused model is stamped with before merging (onnx.compose needs equal ones);
# 10 is what onnxruntime >= 1.17 reads.
IR_VERSION = 10
# The tensor between the preprocessing and the encoder part (float32 NCHW RGB 0..255): both preprocessing forms
# (dynamic `preprocess_graph`, fixed-size `preprocess_fixed`) end in it and every encoder part starts from it.
PIXELS = "pixels"


class GraphBuilder:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def const(self, value: Any, dtype: Any = np.int64, hint: str = "c") -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], output: str | None = None, **attrs: Any) -> str:
        out = output or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=self._name(op_type), **attrs))
        return out

    def op_n(self, op_type: str, inputs: Sequence[str], n: int, **attrs: Any) -> list[str]:
        outs = [self._name(op_type.lower()) for _ in range(n)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=self._name(op_type), **attrs))
        return outs

    def model(
        self,
        inputs: Sequence[onnx.ValueInfoProto],
        outputs: Sequence[onnx.ValueInfoProto],
        opset: int,
        name: str,
    ) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, list(inputs), list(outputs), self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="waste-edge")
        model.ir_version = IR_VERSION
        return model


def tensor_info(name: str, elem_type: int, shape: Sequence[int | str | None]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, list(shape))


FLOAT = TensorProto.FLOAT
UINT8 = TensorProto.UINT8
INT64 = TensorProto.INT64
