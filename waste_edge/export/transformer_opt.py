"""Transformer fusions for a ViT encoder graph before INT8 quantisation: fewer, bigger kernels.

A ViT-B/32 forward on 2 CPU cores at INT8 is about 14 ms of GEMM at the VNNI peak; what the exported graph
adds on top is glue: per layer the attention of `nn.MultiheadAttention` becomes ~30 Reshape / Transpose /
Gather / Slice / Mul nodes in sequence-first layout, LayerNorm and the residual Add are separate passes over
the activations, GELU is five element-wise ops, and the attention's output projection is an fp32 `Gemm` that
dynamic quantisation does not touch. This module rewrites those into ONNX Runtime's fused CPU kernels:

* `Attention` (com.microsoft): one node per layer for QKV projection + scaled dot-product attention, batch
  first (no Transposes); dynamic quantisation turns it into `QAttention` (INT8 QKV GEMM). ONNX Runtime's own
  fusion (`onnxruntime.transformers.optimizer`, model types `vit` / `clip`) does not recognise the graph the
  torch exporter writes for open_clip's attention (it finds 0 Attention nodes), so the pattern is matched here,
  anchored on what is certain (the [D, 3D] in-projection weight and the [D, D] out-projection) and checked
  numerically against the unfused graph before it is used.
* the output projection as a batch-first `MatMul` (+ bias `Add`), so it is quantised like the other GEMMs;
* then ONNX Runtime's transformer optimizer (model type `clip`) for `SkipLayerNormalization` (residual Add +
  LayerNorm + bias) and `BiasGelu`, with the fused-operator counts checked against the number of layers.

The result uses contrib operators, so it is for ONNX Runtime only: it is applied to INT8 (dynamic) exports,
which are ONNX Runtime graphs anyway; fp32 / fp16 exports and TensorRT builds keep the portable graph.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"
_MAX_ATTENTION_NODES = 80  # nodes between the in-projection and the out-projection of one attention block


@dataclass
class FusionReport:
    layers: int = 0  # attention blocks found (in-projection weights of shape [D, 3D])
    fused_ops: dict[str, int] = field(default_factory=dict)  # op type -> count in the optimised graph
    max_abs_diff: float | None = None  # embedding difference, optimised vs original graph, fp32, random input
    applied: bool = False
    reason: str = ""

    def summary(self) -> str:
        if not self.applied:
            return f"transformer fusions not applied: {self.reason}"
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.fused_ops.items()))
        return f"transformer fusions for {self.layers} layers: {ops} (max |d embedding| {self.max_abs_diff:.2e} in fp32)"


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class _Graph:
    """Producer / consumer maps and initializer lookup over one graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.init = {t.name: t for t in model.graph.initializer}
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for n in model.graph.node:
            for i in n.input:
                self.consumers[i].append(n)

    def weight(self, name: str) -> np.ndarray | None:
        t = self.init.get(name)
        return numpy_helper.to_array(t) if t is not None else None

    def only_consumer(self, name: str, op: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op else None


def infer_num_heads(model: onnx.ModelProto) -> int | None:
    """The attention head count of an exported ViT: the H of the [B, H, S, d] Reshape with H * d = width.

    The torch exporter writes the per-head split as a constant shape; the width comes from the [D, 3D]
    in-projection weight. None when either is missing (then no fusion is tried)."""
    g = _Graph(model)
    widths = {w.shape[0] for n in model.graph.node if n.op_type == "MatMul" and len(n.input) == 2
              and (w := g.weight(n.input[1])) is not None and w.ndim == 2 and w.shape[1] == 3 * w.shape[0]}
    if len(widths) != 1:
        return None
    width = widths.pop()
    found = set()
    for n in model.graph.node:
        if n.op_type == "Reshape" and (s := g.weight(n.input[1])) is not None and s.ndim == 1 and s.size == 4:
            h, d = int(s[1]), int(s[3])
            if h > 0 and d > 0 and h * d == width:
                found.add(h)
    return found.pop() if len(found) == 1 else None


def _find_out_projection(g: _Graph, start: str, dim: int) -> onnx.NodeProto | None:
    """The first Gemm / MatMul with a [D, D] weight downstream of `start` (breadth first, bounded)."""
    seen: set[str] = set()
    queue = deque([start])
    steps = 0
    while queue and steps < _MAX_ATTENTION_NODES:
        name = queue.popleft()
        for node in g.consumers.get(name, []):
            if node.name in seen:
                continue
            seen.add(node.name)
            steps += 1
            if node.op_type in ("Gemm", "MatMul") and len(node.input) > 1:
                w = g.weight(node.input[1])
                if w is not None and w.shape == (dim, dim):
                    return node
            queue.extend(node.output)
    return None


def fuse_attention(model: onnx.ModelProto, num_heads: int) -> int:
    """Replace each open_clip attention block by `Attention` + out-projection `MatMul`, in place; returns how many.

    Matched: X [B, S, D] -> Transpose(1, 0, 2) -> MatMul(W_in [D, 3D]) -> Add(b_in [3D]) -> ... -> Gemm(W_out
    [D, D], transB=1[, b_out]) -> Reshape -> Transpose(1, 0, 2) -> Y [B, S, D]. Written: Y = MatMul(Attention(X,
    W_in, b_in), W_out^T) [+ b_out]. Nodes left without consumers are removed afterwards."""
    g = _Graph(model)
    new_nodes: list[tuple[onnx.NodeProto, list[onnx.NodeProto]]] = []  # (node the new ones replace, new ones)
    dead_outputs: set[str] = set()
    count = 0
    for mm in list(model.graph.node):
        if mm.op_type != "MatMul" or len(mm.input) != 2:
            continue
        w_in = g.weight(mm.input[1])
        if w_in is None or w_in.ndim != 2 or w_in.shape[1] != 3 * w_in.shape[0]:
            continue
        dim = w_in.shape[0]
        pre = g.producer.get(mm.input[0])
        if pre is None or pre.op_type != "Transpose" or list(_attr(pre, "perm", [])) != [1, 0, 2]:
            continue
        add = g.only_consumer(mm.output[0], "Add")
        if add is None:
            continue
        bias_name = next((i for i in add.input if i != mm.output[0]), None)
        b_in = g.weight(bias_name) if bias_name else None
        if b_in is None or b_in.shape != (3 * dim,):
            continue
        proj = _find_out_projection(g, add.output[0], dim)
        if proj is None:
            continue
        w_out = g.weight(proj.input[1])
        b_out = g.weight(proj.input[2]) if len(proj.input) > 2 and proj.input[2] else None
        if proj.op_type == "Gemm":
            if _attr(proj, "transA", 0) or _attr(proj, "alpha", 1.0) != 1.0 or _attr(proj, "beta", 1.0) != 1.0:
                continue
            w_out = w_out.T if _attr(proj, "transB", 0) else w_out
        reshape = g.only_consumer(proj.output[0], "Reshape")
        post = g.only_consumer(reshape.output[0], "Transpose") if reshape is not None else None
        if post is None or list(_attr(post, "perm", [])) != [1, 0, 2]:
            continue
        tag = f"fused_attention_{count}"
        w_name, wo_name = f"{tag}/qkv_weight", f"{tag}/out_weight"
        model.graph.initializer.append(numpy_helper.from_array(w_in.astype(np.float32), w_name))
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w_out, dtype=np.float32), wo_name))
        nodes = [helper.make_node("Attention", [pre.input[0], w_name, bias_name], [f"{tag}/context"], name=f"{tag}/Attention",
                                  domain=MS_DOMAIN, num_heads=int(num_heads))]
        out = post.output[0]
        if b_out is not None:
            bo_name = f"{tag}/out_bias"
            model.graph.initializer.append(numpy_helper.from_array(b_out.astype(np.float32), bo_name))
            nodes += [helper.make_node("MatMul", [f"{tag}/context", wo_name], [f"{tag}/projected"], name=f"{tag}/MatMul"),
                      helper.make_node("Add", [f"{tag}/projected", bo_name], [out], name=f"{tag}/Add")]
        else:
            nodes.append(helper.make_node("MatMul", [f"{tag}/context", wo_name], [out], name=f"{tag}/MatMul"))
        new_nodes.append((post, nodes))
        dead_outputs.add(out)
        count += 1
    if not count:
        return 0
    replaced = {id(old): nodes for old, nodes in new_nodes}
    kept: list[onnx.NodeProto] = []
    for n in model.graph.node:
        kept.extend(replaced.get(id(n), [n]))
    del model.graph.node[:]
    model.graph.node.extend(kept)
    _prune(model)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return count


def _const(model: onnx.ModelProto, name: str, value: np.ndarray) -> str:
    model.graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def patch_embedding_as_matmul(model: onnx.ModelProto) -> int:
    """Rewrite the ViT patch embedding (Conv, kernel = stride, no padding) as patches x MatMul, in place.

    Conv(x [B, C, H, W], W [D, C, P, P]) -> Reshape [B, D, N] -> Transpose(0, 2, 1) becomes
    x -> Reshape [B, C, H/P, P, W/P, P] -> Transpose(0, 2, 4, 1, 3, 5) -> Reshape [B, N, C*P*P] -> MatMul(W^T) + b:
    the same sums in another order, and a MatMul is what dynamic INT8 quantises (a Conv would become the slow
    `ConvInteger`). A lever, off by default: measured on the random-weight ViT-B/32 it saves the Conv's ~5 % but
    costs embedding accuracy (cosine to fp32 0.969 instead of 0.988 on real photos; per-channel weights or
    centred pixels do not help), because every later layer amplifies the first layer's rounding.
    Returns 1 when rewritten, 0 when the pattern is not there."""
    g = _Graph(model)
    dims = {i.name: [d.dim_value or None for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    for conv in model.graph.node:
        if conv.op_type != "Conv" or conv.input[0] not in dims:
            continue
        w = g.weight(conv.input[1])
        if w is None or w.ndim != 4 or w.shape[2] != w.shape[3]:
            continue
        d, c, p, _ = w.shape
        _, cin, h, wd = dims[conv.input[0]]
        if (list(_attr(conv, "strides", [1, 1])) != [p, p] or any(_attr(conv, "pads", [0, 0, 0, 0])) or _attr(conv, "group", 1) != 1
                or cin != c or not h or not wd or h % p or wd % p):
            continue
        reshape = g.only_consumer(conv.output[0], "Reshape")
        post = g.only_consumer(reshape.output[0], "Transpose") if reshape is not None else None
        if post is None or list(_attr(post, "perm", [])) != [0, 2, 1]:
            continue
        b = g.weight(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else np.zeros(d, np.float32)
        nh, nw = h // p, wd // p
        t = "patch_embedding"
        x = conv.input[0]
        nodes = [
            helper.make_node("Reshape", [x, _const(model, f"{t}/split_shape", np.array([-1, c, nh, p, nw, p], np.int64))], [f"{t}/split"], name=f"{t}/split"),
            helper.make_node("Transpose", [f"{t}/split"], [f"{t}/patches6"], name=f"{t}/Transpose", perm=[0, 2, 4, 1, 3, 5]),
            helper.make_node("Reshape", [f"{t}/patches6", _const(model, f"{t}/flat_shape", np.array([-1, nh * nw, c * p * p], np.int64))], [f"{t}/patches"], name=f"{t}/flatten"),
            helper.make_node("MatMul", [f"{t}/patches", _const(model, f"{t}/weight", np.ascontiguousarray(w.reshape(d, -1).T, np.float32))], [f"{t}/projected"], name=f"{t}/MatMul"),
            helper.make_node("Add", [f"{t}/projected", _const(model, f"{t}/bias", b.astype(np.float32))], [post.output[0]], name=f"{t}/Add"),
        ]
        order = list(model.graph.node)  # the new nodes go where the Conv was, before every consumer of their output
        at = order.index(conv)
        kept = order[:at] + nodes + [n for n in order[at + 1:] if n is not reshape and n is not post]
        del model.graph.node[:]
        model.graph.node.extend(kept)
        _prune(model)
        return 1
    return 0


def last_layer_class_token_only(model: onnx.ModelProto) -> int:
    """When the graph pools token 0 (CLIP's class token), run the last layer after its attention on that token only.

    After the last attention nothing mixes tokens: the output projection, residual, LayerNorms and MLP are per
    token, and only token 0 reaches the embedding. Gathering token 0 of the attention output and of the
    residual stream right there skips that work for the other S-1 tokens (about 6 % of ViT-B/32's GEMMs).
    Returns 1 when rewritten."""
    g = _Graph(model)
    attn = [n for n in model.graph.node if n.op_type == "Attention" and n.domain == MS_DOMAIN]
    if not attn:
        return 0
    last = attn[-1]
    # The pooling: a Gather of index 0 on axis 1 somewhere after the last attention.
    pool = [n for n in model.graph.node if n.op_type == "Gather" and _attr(n, "axis", 0) == 1
            and (v := g.weight(n.input[1])) is not None and v.size == 1 and int(v.reshape(-1)[0]) == 0]
    if len(pool) != 1:
        return 0
    proj = g.only_consumer(last.output[0], "MatMul")
    if proj is None:
        return 0
    node = proj
    while node is not None and node.op_type != "SkipLayerNormalization":
        users = g.consumers.get(node.output[0], [])
        node = users[0] if len(users) == 1 and users[0].op_type in ("Add", "SkipLayerNormalization") else None
    if node is None:
        return 0
    skip_ln = node
    on_path = {proj.output[0]} | {n.output[0] for n in model.graph.node if n.op_type == "Add" and proj.output[0] in n.input}
    residual_idx = 0 if skip_ln.input[1] in on_path else 1 if skip_ln.input[0] in on_path else None
    if residual_idx is None:
        return 0
    index = _const(model, "class_token/index", np.array([0], np.int64))
    ctx_cls, res_cls = "class_token/context", "class_token/residual"
    gather_ctx = helper.make_node("Gather", [last.output[0], index], [ctx_cls], name="class_token/gather_context", axis=1)
    gather_res = helper.make_node("Gather", [skip_ln.input[residual_idx], index], [res_cls], name="class_token/gather_residual", axis=1)
    proj.input[0] = ctx_cls
    skip_ln.input[residual_idx] = res_cls
    order = list(model.graph.node)
    at = order.index(proj)
    order[at:at] = [gather_ctx, gather_res]
    del model.graph.node[:]
    model.graph.node.extend(order)
    return 1


def _prune(model: onnx.ModelProto) -> None:
    """Drop nodes whose outputs nobody needs (walking back from the graph outputs) and unused initializers."""
    needed = {o.name for o in model.graph.output}
    keep: list[onnx.NodeProto] = []
    for n in reversed(model.graph.node):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    keep.reverse()
    del model.graph.node[:]
    model.graph.node.extend(keep)
    used = [t for t in model.graph.initializer if t.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(used)


def _ort_fusions(model: onnx.ModelProto, num_heads: int, hidden: int) -> tuple[onnx.ModelProto, dict[str, int]]:
    """ONNX Runtime's transformer optimizer (SkipLayerNormalization, BiasGelu, ...) on the graph, offline."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "encoder.onnx"
        onnx.save(model, src)
        opts = FusionOptions("clip")
        opts.enable_attention = False  # done above; ORT's pattern does not match this graph anyway
        opt = optimizer.optimize_model(str(src), model_type="clip", num_heads=num_heads, hidden_size=hidden,
                                       optimization_options=opts, opt_level=0, use_gpu=False)
        stats = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
        return opt.model, stats


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    from waste_edge.runtime.backends.onnxrt import load_session

    sess = load_session(model.SerializeToString(), disabled_optimizers=(), name="ViT encoder (fusion check)")
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def optimize_vit_encoder(encoder_model: onnx.ModelProto, num_heads: int, *, patch_matmul: bool = False,
                         log: Callable[[str], None] | None = None, tolerance: float = 1e-3) -> tuple[onnx.ModelProto, FusionReport]:
    """The encoder with the fusions above, or the original with the reason when they do not apply cleanly.

    Applied only when every attention block was fused, the ORT fusions found one SkipLayerNormalization pair
    and one BiasGelu per layer, and the fp32 embeddings agree within `tolerance` (relative to their scale) on
    a random batch of 2."""
    report = FusionReport()
    fused = onnx.ModelProto()
    fused.CopyFrom(encoder_model)
    layers = fuse_attention(fused, num_heads)
    report.layers = layers
    if not layers:
        report.reason = "no attention block of the expected shape was found"
        return encoder_model, report
    in_proj = [n for n in fused.graph.node if n.op_type == "Attention"]
    hidden = numpy_helper.to_array(next(t for t in fused.graph.initializer if t.name == in_proj[0].input[1])).shape[0]
    left = [n for n in fused.graph.node if n.op_type == "Softmax"]
    if left:
        report.reason = f"{len(left)} attention block(s) left unfused"
        return encoder_model, report
    fused, stats = _ort_fusions(fused, num_heads, hidden)
    stats["Attention"] = layers
    if stats.get("SkipLayerNormalization", 0) < 2 * layers - 1 or stats.get("BiasGelu", 0) + stats.get("FastGelu", 0) + stats.get("Gelu", 0) < layers:
        report.reason = f"ONNX Runtime's fusions matched less than expected for {layers} layers: {stats}"
        return encoder_model, report
    stats["class-token-only last layer"] = last_layer_class_token_only(fused)
    stats["patch embedding as MatMul"] = patch_embedding_as_matmul(fused) if patch_matmul else 0
    report.fused_ops = stats
    dims = encoder_model.graph.input[0].type.tensor_type.shape.dim
    shape = [2] + [d.dim_value for d in dims[1:]]
    if len(shape) != 4 or not all(shape):
        report.reason = f"the encoder input has no static image shape ({shape[1:]}): the fused graph cannot be checked"
        return encoder_model, report
    x = np.random.default_rng(0).uniform(0, 255, size=shape).astype(np.float32)
    ref, got = _run(encoder_model, x), _run(fused, x)
    report.max_abs_diff = float(np.abs(ref - got).max())
    scale = float(np.abs(ref).max()) or 1.0
    if report.max_abs_diff > tolerance * scale:
        report.reason = f"the fused graph differs from the original by {report.max_abs_diff:.3g} (scale {scale:.3g})"
        return encoder_model, report
    report.applied = True
    if log:
        log(report.summary())
    return fused, report
