"""FP16 variant of the encoder part, for GPU execution providers (CUDA, TensorRT via ONNX Runtime).

Weights and most activations go to float16; normalisation layers, softmax and reductions stay float32
because their sums and variances overflow or lose the small differences ViTs depend on (the failure
TensorRT issues 2709 / 2564 describe for naive FP16 ViTs). The converter is ONNX Runtime's own
(`onnxruntime.transformers.float16`, the same code as onnxconverter-common), so no extra dependency.
Preprocessing and head stay fp32, and the encoder keeps float32 inputs and outputs (Casts inside).
"""

from __future__ import annotations

import onnx

# Ops kept in float32 on top of the converter's defaults.
FP32_OPS = (
    "LayerNormalization",
    "BatchNormalization",
    "InstanceNormalization",
    "GroupNormalization",
    "Softmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceL2",
    "Pow",
    "Sqrt",
    "Erf",
)


def convert_encoder_fp16(encoder_model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    half = convert_float_to_float16(
        encoder_model, keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FP32_OPS),
    )
    wrapped = OnnxModel(half)
    wrapped.topological_sort()  # the converter appends its input Casts at the end of the node list
    return wrapped.model
