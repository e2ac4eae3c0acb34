"""A static TensorRT lint: which nodes of an ONNX graph TensorRT's ONNX parser would reject or degrade.

No GPU can be reached here, so `export --format engine` must be right by construction: this lint reads the graph
the way onnx-tensorrt (the parser inside TensorRT 10.x) does and names every node it would refuse or silently
change, with the rule and where the rule comes from. `waste-edge info --model M --check tensorrt` prints the
findings and exits 1 when there are any; the engine export runs it before building and stops with the report.

The rules (RULES below) and their sources:

| rule | finds | source |
| --- | --- | --- |
| operator | an op TensorRT does not implement (N in the matrix, or absent) | onnx-tensorrt docs/operators.md (10.x matrix, data/onnx_tensorrt_operators.json) |
| domain | ops outside the default ONNX domain (ai.onnx.ml, com.microsoft, ...) | operators.md lists the default domain only; ModelImporter.cpp imports other domains only as plugins |
| opset | a default-domain opset outside 9..20 | operators.md: "TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20" |
| resize-antialias | `Resize` with antialias=1 | onnxOpCheckers.cpp: "Antialiasing is not supported currently."; NVIDIA/TensorRT issue 3560 |
| resize-attributes | Resize modes, coordinate transforms, aspect-ratio policies TensorRT lacks | onnxOpCheckers.cpp (Resize checker), operators.md Resize row |
| resize-dynamic | runtime `scales` with an `axes` subset, `sizes` / `scales` of the wrong length | operators.md: "When scales is a tensor input, axes must be an iota vector of length rank(input)"; onnxOpImporters.cpp Resize |
| double | DOUBLE tensors (initializers, casts, intermediate values) | operators.md: "limited support for DOUBLE type ... cast DOUBLE down to FLOAT, clamping" |
| uint8 | UINT8 anywhere but a network input / output and a Cast from it | operators.md: "UINT8 is only supported as network input or output tensor types"; ModelImporter.cpp: "TensorRT does not support UINT8 types for intermediate tensors!" |
| if-branches | `If` branches with different output counts, ranks, or shared output names | onnxOpCheckers.cpp (If checker); operators.md If row |
| initializer-input | `axes` of Reduce*/Slice, Clip bounds that are computed, not initializers | operators.md ("`axes` must be an initializer"); onnxOpImporters.cpp ("Clip min value must be an initializer!") |
| types | an op fed a type outside its row's "Supported Types" | operators.md Supported Types column |

Nodes inside `If` / `Loop` / `Scan` bodies are checked too. The lint is conservative where TensorRT is: a graph
it passes still has to build on the GPU (memory, tactics), but it will not be refused by the parser.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import onnx
from onnx import TensorProto

from waste_edge.errors import WasteEdgeError

RULES: dict[str, str] = {
    "operator": "onnx-tensorrt docs/operators.md, TensorRT 10.x operator support matrix",
    "domain": "onnx-tensorrt docs/operators.md (default ONNX domain only); ModelImporter.cpp (other domains need plugins)",
    "opset": "onnx-tensorrt docs/operators.md: TensorRT 10.0 supports opset 9 to 20",
    "resize-antialias": "onnx-tensorrt onnxOpCheckers.cpp Resize: 'Antialiasing is not supported currently.'; NVIDIA/TensorRT issue 3560",
    "resize-attributes": "onnx-tensorrt onnxOpCheckers.cpp Resize checker; docs/operators.md Resize row",
    "resize-dynamic": "onnx-tensorrt docs/operators.md Resize row (scales tensor input needs iota axes); onnxOpImporters.cpp Resize importer",
    "double": "onnx-tensorrt docs/operators.md: limited support for DOUBLE, cast down to FLOAT with clamping",
    "uint8": "onnx-tensorrt docs/operators.md: UINT8 only as network input/output; ModelImporter.cpp: no UINT8 intermediate tensors",
    "if-branches": "onnx-tensorrt onnxOpCheckers.cpp If checker; docs/operators.md If row",
    "initializer-input": "onnx-tensorrt docs/operators.md ('axes' must be an initializer); onnxOpImporters.cpp Clip",
    "types": "onnx-tensorrt docs/operators.md, Supported Types column",
}

_TYPE_NAMES = {
    TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16", TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64", TensorProto.INT8: "INT8", TensorProto.UINT8: "UINT8", TensorProto.BOOL: "BOOL",
    TensorProto.DOUBLE: "DOUBLE", TensorProto.INT16: "INT16", TensorProto.UINT16: "UINT16", TensorProto.UINT32: "UINT32",
    TensorProto.UINT64: "UINT64", TensorProto.STRING: "STRING", TensorProto.FLOAT8E4M3FN: "FP8", TensorProto.INT4: "INT4",
}
_RESIZE_MODES = {"nearest", "linear", "cubic"}
_RESIZE_TRANSFORMS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_AXES_INPUT_OPS = {"ReduceSum": 1, "ReduceMean": 1, "ReduceMax": 1, "ReduceMin": 1, "ReduceProd": 1, "ReduceL1": 1, "ReduceL2": 1,
                   "ReduceLogSum": 1, "ReduceLogSumExp": 1, "ReduceSumSquare": 1, "Slice": 3}
_QUANTIZED = {"INT8", "INT4", "FP8"}  # TensorRT takes these only through Q/DQ (operators.md note)


class TensorRTLintError(WasteEdgeError):
    """The graph has nodes TensorRT's ONNX parser would reject or degrade (the message is the report)."""


@dataclass(frozen=True)
class Finding:
    rule: str
    node: str  # node name (or the tensor / graph the finding is about)
    op_type: str
    message: str
    source: str

    def line(self) -> str:
        return f"  [{self.rule}] {self.node} ({self.op_type}): {self.message}\n      source: {self.source}"


@dataclass
class LintReport:
    model: str
    nodes: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "nodes": self.nodes, "passed": self.passed, "findings": [asdict(f) for f in self.findings]}

    def summary(self) -> str:
        if self.passed:
            return f"tensorrt check: PASS, {self.nodes} nodes, nothing TensorRT 10.x's ONNX parser would reject or degrade"
        rules = sorted({f.rule for f in self.findings})
        head = f"tensorrt check: FAIL, {len(self.findings)} finding(s) in {self.nodes} nodes (rules: {', '.join(rules)})"
        return "\n".join([head] + [f.line() for f in self.findings])


@lru_cache(maxsize=1)
def operator_matrix() -> dict[str, Any]:
    """The onnx-tensorrt operator support matrix as data (op -> supported, types, restrictions) plus its source."""
    text = resources.files("waste_edge.export").joinpath("data/onnx_tensorrt_operators.json").read_text(encoding="utf-8")
    return json.loads(text)


def _walk(graph: onnx.GraphProto, prefix: str = "") -> Iterator[tuple[onnx.NodeProto, str, onnx.GraphProto]]:
    """Every node of a graph and of its subgraphs, with a path-like name for nested ones."""
    for i, node in enumerate(graph.node):
        name = prefix + (node.name or f"{node.op_type}_{i}")
        yield node, name, graph
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subs:
                yield from _walk(sub, f"{name}/{attr.name}/")


def _types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor whose type is known (after ONNX shape inference, subgraphs included)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a graph shape inference cannot handle still gets the checks that need no types
        inferred = model
    types: dict[str, int] = {}

    def collect(graph: onnx.GraphProto) -> None:
        for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                types[vi.name] = vi.type.tensor_type.elem_type
        for init in graph.initializer:
            types[init.name] = init.data_type
        for node in graph.node:
            for attr in node.attribute:
                for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                    collect(sub)

    collect(inferred.graph)
    return types


def _initializers(graph: onnx.GraphProto) -> set[str]:
    names = {t.name for t in graph.initializer}
    names |= {n.output[0] for n in graph.node if n.op_type == "Constant" and n.output}
    return names


def lint_model(model: onnx.ModelProto, name: str = "model") -> LintReport:
    """Every finding of every rule on `model` (see the module docstring)."""
    matrix = operator_matrix()
    ops = matrix["operators"]
    types = _types(model)
    graph_io = {vi.name for vi in list(model.graph.input) + list(model.graph.output)}
    graph_inputs = {vi.name for vi in model.graph.input}
    nodes = list(_walk(model.graph))
    report = LintReport(name, len(nodes))
    add = lambda rule, node, op, msg: report.findings.append(Finding(rule, node, op, msg, RULES[rule]))  # noqa: E731

    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and not matrix["opset_min"] <= imp.version <= matrix["opset_max"]:
            add("opset", model.graph.name or "graph", "opset_import", f"default-domain opset {imp.version} is outside {matrix['opset_min']}..{matrix['opset_max']}")

    for tensor in model.graph.initializer:
        if tensor.data_type == TensorProto.DOUBLE:
            add("double", tensor.name, "initializer", "DOUBLE initializer: TensorRT casts it down to FLOAT, clamping")

    consts_of: dict[int, set[str]] = {}
    for node, node_name, graph in nodes:
        op = node.op_type
        consts = consts_of.setdefault(id(graph), _initializers(graph) | {t.name for t in model.graph.initializer})
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.domain not in ("", "ai.onnx"):
            add("domain", node_name, op, f"op of domain {node.domain!r}: TensorRT's parser has no importer for it (a plugin would be needed)")
            continue
        row = ops.get(op)
        if row is None or not row["supported"]:
            add("operator", node_name, op, f"{op} is {'not in' if row is None else 'marked unsupported (N) in'} the onnx-tensorrt operator matrix")
            continue
        in_types = [_TYPE_NAMES.get(types.get(i, 0)) for i in node.input if i]
        out_types = [_TYPE_NAMES.get(types.get(o, 0)) for o in node.output if o]
        # uint8: only the network input / output and a Cast reading a network input may touch it
        for i, t in zip([i for i in node.input if i], in_types):
            if t == "UINT8" and not (op == "Cast" and i in graph_inputs):
                add("uint8", node_name, op, f"reads UINT8 tensor {i!r}: only a Cast from the network input may")
        for o, t in zip([o for o in node.output if o], out_types):
            if t == "UINT8" and o not in graph_io:
                add("uint8", node_name, op, f"produces UINT8 intermediate tensor {o!r}")
            if t == "DOUBLE":
                add("double", node_name, op, f"produces DOUBLE tensor {o!r}: computed in FLOAT by TensorRT, with clamping")
        if op == "Cast" and attrs.get("to") == TensorProto.DOUBLE and not any(t == "DOUBLE" for t in out_types):
            add("double", node_name, op, "casts to DOUBLE: computed in FLOAT by TensorRT, with clamping")
        # types column: the first input's type must be listed (quantized types and unknown types are not judged here)
        allowed = set(row["types"])
        if allowed and in_types and in_types[0] and in_types[0] not in allowed | _QUANTIZED | {"UINT8", "DOUBLE"}:
            add("types", node_name, op, f"input type {in_types[0]} is not among {op}'s supported types ({', '.join(row['types'])})")
        # axes / bounds that must be initializers
        k = _AXES_INPUT_OPS.get(op)
        if k is not None and len(node.input) > k and node.input[k] and node.input[k] not in consts:
            add("initializer-input", node_name, op, f"`axes` input {node.input[k]!r} is computed at run time; TensorRT needs an initializer")
        if op == "Clip":
            for i in node.input[1:3]:
                if i and i not in consts:
                    add("initializer-input", node_name, op, f"Clip bound {i!r} is computed at run time; TensorRT needs an initializer")
        if op == "Resize":
            _lint_resize(node, node_name, attrs, consts, add)
        if op == "If":
            _lint_if(node, node_name, attrs, add)
    return report


def _lint_resize(node: onnx.NodeProto, name: str, attrs: dict[str, Any], consts: set[str], add: Any) -> None:
    if int(attrs.get("antialias", 0)) != 0:
        add("resize-antialias", name, "Resize", "antialias=1: TensorRT's parser rejects antialiased Resize")
    mode = attrs.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode not in _RESIZE_MODES:
        add("resize-attributes", name, "Resize", f"mode {mode!r} is not one of {sorted(_RESIZE_MODES)}")
    ctm = attrs.get("coordinate_transformation_mode", b"half_pixel")
    ctm = ctm.decode() if isinstance(ctm, bytes) else str(ctm)
    if ctm not in _RESIZE_TRANSFORMS:
        add("resize-attributes", name, "Resize", f"coordinate_transformation_mode {ctm!r} is not supported")
    policy = attrs.get("keep_aspect_ratio_policy", b"stretch")
    policy = policy.decode() if isinstance(policy, bytes) else str(policy)
    if policy != "stretch":
        add("resize-attributes", name, "Resize", f"keep_aspect_ratio_policy {policy!r}: only 'stretch' is supported")
    axes = attrs.get("axes")
    scales = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if scales is not None and scales not in consts and axes is not None and list(axes) != list(range(len(axes))):
        add("resize-dynamic", name, "Resize", f"runtime `scales` with axes {list(axes)}: TensorRT needs axes to be an iota over every dimension")


def _lint_if(node: onnx.NodeProto, name: str, attrs: dict[str, Any], add: Any) -> None:
    then_g, else_g = attrs.get("then_branch"), attrs.get("else_branch")
    if then_g is None or else_g is None:
        add("if-branches", name, "If", "an If needs both then_branch and else_branch")
        return
    if len(then_g.output) != len(else_g.output):
        add("if-branches", name, "If", f"then/else have {len(then_g.output)} and {len(else_g.output)} outputs")
        return
    for a, b in zip(then_g.output, else_g.output):
        ra = len(a.type.tensor_type.shape.dim) if a.type.tensor_type.HasField("shape") else None
        rb = len(b.type.tensor_type.shape.dim) if b.type.tensor_type.HasField("shape") else None
        if ra is not None and rb is not None and ra != rb:
            add("if-branches", name, "If", f"outputs {a.name!r} and {b.name!r} have ranks {ra} and {rb}: they must be equal")
        if a.name == b.name:
            add("if-branches", name, "If", f"both branches output a tensor named {a.name!r}: the names must differ")


def lint_path(path: str | Path) -> LintReport:
    """Lint an `.onnx` file (the engine export lints the fused graph before building from it)."""
    p = Path(path)
    if p.suffix.lower() != ".onnx":
        raise TensorRTLintError(f"{p.name}: the TensorRT check reads .onnx graphs (an .engine was already accepted by TensorRT)")
    try:
        model = onnx.load(str(p))
    except Exception as e:  # protobuf decode errors have many types
        raise TensorRTLintError(f"{p}: not a readable ONNX model ({type(e).__name__})") from None
    return lint_model(model, str(p))
