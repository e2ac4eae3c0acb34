"""A Keras baseline run as the fused model of ARCHITECTURE.md, contract 2: same input, outputs and metadata as a linear run.

    image uint8 [N, H, W, 3] (BGR or RGB, any H and W)
      -> the toolkit's preprocessing graph (`preprocess_graph.build_preprocess_model`, box_crop spec of the run;
         with a fixed frame size, the fixed-size form of Pillow's taps that TensorRT accepts):
         `pixels` float32 NCHW RGB 0..255, the same crop the Keras model was trained and evaluated on
      -> Transpose to NHWC -> the Keras model converted by tf2onnx (its own scaling / preprocess_input inside)
      -> `probabilities` float32 [N, K] (the model's softmax), `label` int64 [N] (ArgMax)

The converted Keras graph is spliced in with its tensor names prefixed (`keras/`), so the `pixels` stage keeps
its name and `parity` can compare it with the PIL crop exactly as it does for linear runs. Export checks itself:
the ONNX model and the Keras model must agree on random crops before the file is written.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnx
from onnx import compose, helper, numpy_helper

from waste_edge import __version__
from waste_edge.errors import WasteEdgeError
from waste_edge.export.onnx_builder import FLOAT, INT64, IR_VERSION
from waste_edge.export.preprocess_graph import PIXELS, build_preprocess_model
from waste_edge.runtime.metadata import INPUT_NAME, OUTPUT_LABEL, OUTPUT_PROBABILITIES, ModelMetadata

MIN_OPSET = 18  # Resize antialias in the preprocessing graph
SELF_CHECK_TOLERANCE = 1e-4  # max |p_onnx - p_keras| on the self-check crops


class KerasExportError(WasteEdgeError):
    """A Keras run could not be converted to the fused ONNX model."""


def convert_keras_model(model: Any, imgsz: int, *, opset: int = MIN_OPSET) -> tuple[onnx.ModelProto, str, str]:
    """(ONNX model, input name, output name) of the Keras model on float32 NHWC [N, imgsz, imgsz, 3].

    tf2onnx (like Keras' own `export(format="onnx")`, which calls it the same way) freezes variables but leaves
    constants that the model captured from eager mode (`preprocess_input`'s ImageNet mean, EfficientNet's
    Normalization statistics) as extra graph inputs; they are bound back here as initializers.
    """
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, imgsz, imgsz, 3), tf.float32, name="keras_pixels"),)
    # from_function on the inference call, not from_keras: tf2onnx 1.17's from_keras looks Keras 3 tensors up by
    # names that Sequential models loaded from model.keras do not carry.
    fn = tf.function(lambda x: model(x, training=False), input_signature=spec)
    captures = {internal.name: external for external, internal in fn.get_concrete_function().graph.captures
                if external.dtype != tf.resource}
    try:
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset)
    except Exception as e:  # tf2onnx raises many types; the user needs one line
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise KerasExportError(f"tf2onnx could not convert the Keras model: {msg}") from None
    used = {name for node in proto.graph.node for name in node.input}
    for vi in [i for i in proto.graph.input if i.name != "keras_pixels"]:
        if vi.name in used:
            if vi.name not in captures:
                raise KerasExportError(f"the converted Keras model has an unexpected extra input {vi.name!r}")
            proto.graph.initializer.append(numpy_helper.from_array(np.asarray(captures[vi.name].numpy()), vi.name))
        proto.graph.input.remove(vi)  # unused ones were already folded into constants by tf2onnx
    if len(proto.graph.input) != 1 or len(proto.graph.output) != 1:
        raise KerasExportError(f"expected one input and one output from the Keras model, got {len(proto.graph.input)} and {len(proto.graph.output)}")
    return proto, proto.graph.input[0].name, proto.graph.output[0].name


def _opsets(*models: onnx.ModelProto) -> list[onnx.OperatorSetIdProto]:
    """Union of the parts' opset imports, limited to domains some node uses (tf2onnx declares ai.onnx.ml
    without using it; TensorRT refuses that domain)."""
    used = {n.domain for m in models for n in m.graph.node} | {""}
    union: dict[str, int] = {}
    for m in models:
        for o in m.opset_import:
            if o.domain not in used:
                continue
            if o.domain in union and union[o.domain] != o.version and o.domain in ("", "ai.onnx"):
                raise KerasExportError(f"opset mismatch between preprocessing ({union[o.domain]}) and converted model ({o.version})")
            union[o.domain] = max(union.get(o.domain, 0), o.version)
    return [helper.make_opsetid(d, v) for d, v in sorted(union.items())]


def fuse(pre: onnx.ModelProto, keras_proto: onnx.ModelProto, k_in: str, k_out: str, num_classes: int, batch: int | None) -> onnx.ModelProto:
    """One graph: preprocessing nodes, NCHW->NHWC, the prefixed Keras graph, Identity + ArgMax outputs."""
    body = compose.add_prefix(keras_proto, "keras/")
    k_in, k_out = "keras/" + k_in, "keras/" + k_out
    nodes = list(pre.graph.node)
    nodes.append(helper.make_node("Transpose", [PIXELS], [k_in], name="keras_nhwc", perm=[0, 2, 3, 1]))
    nodes += list(body.graph.node)
    nodes.append(helper.make_node("Identity", [k_out], [OUTPUT_PROBABILITIES], name="probabilities"))
    nodes.append(helper.make_node("ArgMax", [OUTPUT_PROBABILITIES], [OUTPUT_LABEL], name="label", axis=1, keepdims=0))
    bdim: int | str = batch if batch else "batch"
    graph = helper.make_graph(
        nodes, "waste_edge_fused_keras", list(pre.graph.input),
        [helper.make_tensor_value_info(OUTPUT_PROBABILITIES, FLOAT, [bdim, num_classes]),
         helper.make_tensor_value_info(OUTPUT_LABEL, INT64, [bdim])],
        list(pre.graph.initializer) + list(body.graph.initializer),
    )
    fused = helper.make_model(graph, opset_imports=_opsets(pre, body), producer_name="waste-edge")
    fused.ir_version = IR_VERSION
    return onnx.shape_inference.infer_shapes(fused)


def _self_check(fused: onnx.ModelProto, model: Any, imgsz: int, channel_order: str, batch: int | None) -> float:
    """Max |p_onnx - p_keras| on random crops already at imgsz (the resize is then the identity)."""
    from waste_edge.runtime.backends.onnxrt import load_session

    n = batch or 2
    crops = np.random.default_rng(0).integers(0, 256, (n, imgsz, imgsz, 3), dtype=np.uint8)
    sess = load_session(fused.SerializeToString(), threads=2, name="fused Keras model")
    frames = crops[..., ::-1] if channel_order == "BGR" else crops
    p_onnx = sess.run([OUTPUT_PROBABILITIES], {INPUT_NAME: np.ascontiguousarray(frames)})[0]
    p_keras = np.asarray(model.predict(crops.astype(np.float32), verbose=0))
    return float(np.max(np.abs(p_onnx.astype(np.float64) - p_keras)))


def build_keras_onnx(run: Any, opts: Any, *, progress: bool = True, log: Callable[[str], None] | None = None) -> tuple[onnx.ModelProto, ModelMetadata, dict[str, Any]]:
    """The fused model of a `KerasRun` in memory, metadata set, checked (ONNX checker + Keras self-check).

    From the export options (`exporter.ExportOptions`): `opset`, `channel_order`, the batch dimension (fixed to
    `batch` unless `dynamic`) and the frame size (`imgsz` (H, W), or any size).
    """
    import tf2onnx

    opset, channel_order, imgsz = opts.opset, opts.channel_order, opts.imgsz  # checked by exporter.validate_options
    batch = None if opts.dynamic else opts.batch
    model = run.load_model()
    size = run.imgsz
    if log:
        log(f"converting keras {run.arch} ({model.count_params():,} parameters) with tf2onnx {tf2onnx.__version__}, opset {opset}")
    keras_proto, k_in, k_out = convert_keras_model(model, size, opset=opset)
    pre = build_preprocess_model(run.spec, channel_order, opset=opset, batch=batch, imgsz=imgsz)
    fused = fuse(pre, keras_proto, k_in, k_out, len(run.classes), batch)
    details: dict[str, Any] = {"variant": "fp32", "opset": opset, "converter": f"tf2onnx {tf2onnx.__version__}"}
    meta = ModelMetadata(
        classes=run.classes,
        display_names=run.display_names,
        channel_order=channel_order,
        preprocess=dict(run.card["preprocess"]),
        encoder=run.encoder_id,
        head_sha256=run.head_sha256,  # the whole Keras model is the "head" of a baseline: model.keras's sha256
        toolkit_version=__version__,
        variant="fp32",
        input_size=list(imgsz) if imgsz else None,
        model_kind=run.kind,
        extra={"arch": run.arch, "imgsz": size, "weights": run.card.get("encoder", {}).get("weights", {}).get("source"),
               "converter": details["converter"], "opset": opset, "dynamic_batch": batch is None, "batch": batch},
    )
    helper.set_model_props(fused, meta.to_props())
    fused.doc_string = f"waste-edge fused model: keras {run.arch} ({', '.join(run.classes)}), fp32"
    try:
        onnx.checker.check_model(fused, full_check=True)
    except onnx.checker.ValidationError as e:
        raise KerasExportError(f"the fused Keras model fails the ONNX checker: {str(e).splitlines()[0]}") from None
    # The self-check feeds crops already at the model's input size, which only a graph taking any frame size accepts:
    # a fixed-size export is checked through the same Keras part behind the dynamic preprocessing (the fixed-size
    # preprocessing itself is Pillow-exact by construction, tests/export/test_preprocess_fixed.py).
    checked = fused if imgsz is None else fuse(build_preprocess_model(run.spec, channel_order, opset=opset, batch=batch),
                                               keras_proto, k_in, k_out, len(run.classes), batch)
    dp = _self_check(checked, model, size, channel_order, batch)
    details["self_check_max_abs_dp"] = dp
    if dp > SELF_CHECK_TOLERANCE:
        raise KerasExportError(f"the converted model disagrees with the Keras model by {dp:.2e} (> {SELF_CHECK_TOLERANCE}) in probability")
    return fused, meta, details
