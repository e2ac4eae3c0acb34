"""The fused model (ARCHITECTURE.md, contract 2): preprocessing + encoder + head in ONE ONNX graph.

It is assembled from three parts so that each is built by the tool that is exact for it and variants can
transform one part alone (INT8 / FP16 touch only the encoder):

1. preprocessing, written op by op from the `PreprocessSpec` (`preprocess_graph.py`): uint8 NHWC frame ->
   `pixels` float NCHW in 0..255;
2. the encoder, traced from torch with the scale-and-normalise step folded into its first convolution
   (exact: a pixel affine map composed with a linear map), so `pixels` feed it directly: -> `embedding`;
3. the head, written op by op from `head.json`: optional L2 normalisation, `Gemm` with `softmax_weights()`
   (softmax([0, z]) == sigmoid(z), so probabilities equal sklearn's `predict_proba`), `Softmax`, `ArgMax`.
   No ai.onnx.ml operators: TensorRT cannot run them.

The intermediate tensors keep their names (`pixels`, `embedding`) inside the merged graph, so `parity` can
expose them as extra outputs of a temporary copy to break a mismatch down by stage.
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import Any

import numpy as np
import onnx
import torch
from onnx import compose

from waste_edge.errors import WasteEdgeError
from waste_edge.export.onnx_builder import FLOAT, INT64, IR_VERSION, GraphBuilder, tensor_info
from waste_edge.export.preprocess_graph import PIXELS
from waste_edge.runtime.metadata import OUTPUT_EMBEDDING, OUTPUT_LABEL, OUTPUT_PROBABILITIES
from waste_edge.train.effnet_lite import EfficientNetLite, SameConv2d
from waste_edge.train.encoders import Encoder
from waste_edge.train.head import LinearHead

EMBEDDING = OUTPUT_EMBEDDING
ENCODER_EMBEDDING = "encoder_embedding"


class ExportError(WasteEdgeError):
    """The model could not be exported (exporter failure, unsupported encoder, bad options)."""


# -- encoder -------------------------------------------------------------------------------------------


def _folded_conv(conv: Any, scale: Any, shift: Any) -> Any:
    """A conv on raw pixels equal to `conv` on (raw * scale + shift), valid when no zero padding is applied
    (zeros in normalised space are not zeros in raw space)."""
    w = conv.weight.detach().double()
    new = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation, conv.groups, bias=True)
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64)
    with torch.no_grad():
        new.weight.copy_((w * scale.view(1, -1, 1, 1)).float())
        new.bias.copy_((bias + (w * shift.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))).float())
    return new


def raw_pixel_encoder(encoder: Encoder) -> tuple[Any, str]:
    """A copy of `encoder.module` that takes 0..255 RGB floats, and how normalisation was handled.

    `folded` when it is merged into the first convolution (CLIP ViT patch embedding: no padding;
    EfficientNet-Lite stem: TF 'SAME' zero padding becomes padding with the per-channel mean, whose
    normalised value is 0); otherwise an explicit Mul + Add in front (`affine`).
    """
    spec = encoder.spec
    mean = torch.tensor(spec.mean, dtype=torch.float64) * 255.0
    std = torch.tensor(spec.std, dtype=torch.float64) * 255.0
    scale, shift = 1.0 / std, -mean / std  # float64: the folded weights are rounded to float32 once
    module = copy.deepcopy(encoder.module).eval()
    conv1 = getattr(module, "conv1", None)
    if encoder.family == "clip" and isinstance(conv1, torch.nn.Conv2d) and tuple(conv1.padding) == (0, 0) and conv1.groups == 1:
        module.conv1 = _folded_conv(conv1, scale, shift)
        return module, "folded"
    if isinstance(module, EfficientNetLite) and len(set(spec.mean)) == 1:
        stem = module._conv_stem
        folded = _MeanPaddedSameConv(stem, float(mean[0]))
        with torch.no_grad():
            w = stem.weight.detach().double()
            folded.weight.copy_((w * scale.view(1, -1, 1, 1)).float())
            folded.bias.copy_((w * shift.view(1, -1, 1, 1)).sum(dim=(1, 2, 3)).float())
        module._conv_stem = folded
        return module, "folded"
    return torch.nn.Sequential(_Affine(scale.float(), shift.float()), module).eval(), "affine"


class _MeanPaddedSameConv(SameConv2d):
    """SameConv2d on raw pixels: pads with the mean pixel value, which normalises to exactly 0."""

    def __init__(self, conv: SameConv2d, pad_value: float) -> None:
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation, conv.groups, bias=True)
        self.pad_value = pad_value


class _Affine(torch.nn.Module):
    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.view(1, -1, 1, 1))
        self.register_buffer("shift", shift.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def export_encoder(encoder: Encoder, *, opset: int = 18, log: Any = None) -> tuple[onnx.ModelProto, str]:
    """The encoder as ONNX: `pixels` float [N, 3, S, S] in 0..255 -> `embedding` float [N, D], dynamic N.

    Tries the dynamo exporter first and falls back to the TorchScript one; either way with a batch-2
    example, because a batch-1 example silently fixes the batch dimension.
    """
    module, norm = raw_pixel_encoder(encoder)
    size = encoder.spec.size
    example = (torch.rand(2, 3, size, size) * 255.0,)
    errors = []
    for dynamo in (True, False):
        buf = io.BytesIO()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if dynamo:
                    prog = torch.onnx.export(
                        module, example, dynamo=True, opset_version=opset, input_names=[PIXELS], output_names=[EMBEDDING],
                        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},), optimize=True, verbose=False,
                    )
                    model = prog.model_proto
                else:
                    torch.onnx.export(
                        module, example, buf, dynamo=False, opset_version=opset, input_names=[PIXELS], output_names=[EMBEDDING],
                        dynamic_axes={PIXELS: {0: "batch"}, EMBEDDING: {0: "batch"}}, do_constant_folding=True,
                    )
                    model = onnx.load_from_string(buf.getvalue())
        except Exception as e:  # exporter internals raise anything; try the other exporter, report both
            errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        if log:
            log(f"encoder exported with the {'dynamo' if dynamo else 'TorchScript'} exporter (normalisation {norm})")
        return _normalise_opset(_without_exporter_records(model), opset), norm
    raise ExportError(f"cannot export encoder {encoder.id} to ONNX: " + "; ".join(errors))


def _without_exporter_records(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the exporter's per-node debug records (Python stack traces with the checkout's absolute paths, FX node
    text): they made a model's bytes depend on the folder the repository was cloned into, so a rebuild elsewhere
    could never be bit-identical. Nothing reads them."""
    for node in model.graph.node:
        del node.metadata_props[:]
    return model


def _normalise_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Same default-domain opset and IR version on every part: onnx.compose refuses to merge otherwise."""
    have = {o.domain: o.version for o in model.opset_import}
    if have.get("", opset) != opset:
        from onnx import version_converter

        model = version_converter.convert_version(model, opset)
    model.ir_version = IR_VERSION
    return model


# -- head ----------------------------------------------------------------------------------------------


def build_head_model(head: LinearHead, *, opset: int = 18, with_embedding: bool = False) -> onnx.ModelProto:
    """`embedding` [N, D] -> `probabilities` [N, K] float32 and `label` [N] int64, plain ONNX ops.

    `with_embedding` adds a third output `embedding`: the features the `Gemm` sees (ARCHITECTURE.md, contract 2), which is
    what `adapt` refits a head on. Without normalisation that is the encoder's output itself; with L2
    normalisation the normalised tensor takes the name and the encoder's output is `encoder_embedding`
    (`head_input_name`), so the head's `Gemm` always reads the tensor called `embedding`.
    """
    w, b = head.softmax_weights()
    g = GraphBuilder("head/")
    x = head_input_name(head, with_embedding)
    if head.l2_normalize:
        norm = g.op("ReduceL2", [x, g.const([1])], keepdims=1)
        x = g.op("Div", [x, g.op("Max", [norm, g.const([1e-12], np.float32)])], EMBEDDING if with_embedding else None)
    logits = g.op("Gemm", [x, g.const(w, np.float32, "weight"), g.const(b, np.float32, "bias")])
    g.op("Softmax", [logits], OUTPUT_PROBABILITIES, axis=1)
    g.op("ArgMax", [OUTPUT_PROBABILITIES], OUTPUT_LABEL, axis=1, keepdims=0)
    k = w.shape[1]
    outputs = [tensor_info(OUTPUT_PROBABILITIES, FLOAT, ["batch", k]), tensor_info(OUTPUT_LABEL, INT64, ["batch"])]
    if with_embedding:
        outputs.append(tensor_info(EMBEDDING, FLOAT, ["batch", head.dim]))
    return g.model([tensor_info(head_input_name(head, with_embedding), FLOAT, ["batch", head.dim])], outputs, opset, "waste_edge_head")


def head_input_name(head: LinearHead, with_embedding: bool) -> str:
    """The encoder output's name in the fused graph: `embedding`, unless that name goes to normalised features."""
    return ENCODER_EMBEDDING if with_embedding and head.l2_normalize else EMBEDDING


def embedding_metadata(head: LinearHead) -> dict[str, Any]:
    """What ARCHITECTURE.md, contract 2 records about the `embedding` output (ModelMetadata.embedding)."""
    return {"output": EMBEDDING, "dim": head.dim, "normalization": "l2" if head.l2_normalize else "none"}


def rename_output(model: onnx.ModelProto, old: str, new: str) -> onnx.ModelProto:
    """A copy of `model` whose output (and every use of it inside) is called `new`."""
    m = copy.deepcopy(model)
    for node in m.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    for vi in list(m.graph.output) + list(m.graph.value_info):
        if vi.name == old:
            vi.name = new
    return m


# -- composition ---------------------------------------------------------------------------------------


def _align(models: list[onnx.ModelProto]) -> list[onnx.ModelProto]:
    """Give every part the union of opset imports (same versions) so onnx.compose accepts them."""
    union: dict[str, int] = {}
    for m in models:
        for o in m.opset_import:
            union[o.domain] = max(union.get(o.domain, 0), o.version)
    out = []
    for src in models:
        m = onnx.ModelProto()
        m.CopyFrom(src)
        del m.opset_import[:]
        m.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in sorted(union.items()))
        m.ir_version = IR_VERSION
        out.append(m)
    return out


def compose_fused(pre: onnx.ModelProto, enc: onnx.ModelProto, head: onnx.ModelProto) -> onnx.ModelProto:
    """preprocessing -> encoder -> head; the encoder's output takes the name of the head's input."""
    head_in = head.graph.input[0].name
    if head_in != EMBEDDING:
        enc = rename_output(enc, EMBEDDING, head_in)
    pre, enc, head = _align([pre, enc, head])
    body = compose.merge_models(enc, head, io_map=[(head_in, head_in)])
    body = _align([body])[0]
    fused = compose.merge_models(pre, body, io_map=[(PIXELS, PIXELS)])
    fused.graph.name = "waste_edge_fused"
    fused.producer_name = "waste-edge"
    # Shapes inferred inside the traced encoder may name dimensions the merged graph no longer has.
    del fused.graph.value_info[:]
    return _align([fused])[0]


def set_io_dims(model: onnx.ModelProto, batch: int | None, imgsz: tuple[int, int] | None) -> None:
    """Fix (or name) the batch and image dimensions on the graph's inputs and outputs."""

    def set_dim(d: Any, value: int | str) -> None:
        if isinstance(value, int):
            d.Clear()
            d.dim_value = value
        else:
            d.Clear()
            d.dim_param = value

    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            set_dim(dims[0], batch if batch else "batch")
        if vi.name == model.graph.input[0].name:
            set_dim(dims[1], imgsz[0] if imgsz else "height")
            set_dim(dims[2], imgsz[1] if imgsz else "width")


def with_stage_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy that also outputs `pixels` and `embedding` (for the per-stage breakdown of `parity`)."""
    m = copy.deepcopy(model)
    names = {o.name for o in m.graph.output}
    produced = {out for n in m.graph.node for out in n.output}
    for name in (PIXELS, EMBEDDING):
        if name in produced and name not in names:
            m.graph.output.append(onnx.helper.make_tensor_value_info(name, FLOAT, None))
    return m
