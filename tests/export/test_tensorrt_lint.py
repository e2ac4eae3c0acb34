"""The TensorRT lint: every rule fails on a tiny hand-built graph, the fixed-size fused graphs pass, the dynamic one fails."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from waste_edge.cli import main
from waste_edge.export.tensorrt_lint import RULES, TensorRTLintError, lint_model, lint_path, operator_matrix


def _model(nodes, inputs, outputs, inits=(), opset=18, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    m.ir_version = 10
    return m


def _f(name, shape=(1, 3, 8, 8), t=T.FLOAT):
    return helper.make_tensor_value_info(name, t, list(shape))


def _c(name, value, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def _rules(model):
    return {f.rule for f in lint_model(model).findings}


def _nodes(model, rule):
    return [f.node for f in lint_model(model).findings if f.rule == rule]


CLEAN = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_f("x")], [_f("y")])

# One graph per rule, each with exactly the defect the rule is about.
FAILING = {
    "operator": _model([helper.make_node("MatMulInteger", ["a", "b"], ["y"], name="mmi")],
                       [_f("a", (2, 4), T.UINT8), _f("b", (4, 2), T.UINT8)], [_f("y", (2, 2), T.INT32)]),
    "domain": _model([helper.make_node("LinearClassifier", ["x"], ["l", "s"], name="lc", domain="ai.onnx.ml",
                                       coefficients=[1.0, 2.0], intercepts=[0.0], classlabels_ints=[0, 1])],
                     [_f("x", (1, 1))], [_f("l", (1,), T.INT64), _f("s", (1, 2))], extra_opsets=[helper.make_opsetid("ai.onnx.ml", 3)]),
    "opset": _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_f("x")], [_f("y")], opset=21),
    "resize-antialias": _model([helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], name="aa", mode="linear", antialias=1)],
                               [_f("x")], [_f("y", (1, 3, 4, 4))], [_c("sizes", [1, 3, 4, 4])]),
    "resize-attributes": _model([helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], name="keep", mode="linear",
                                                  keep_aspect_ratio_policy="not_larger", axes=[2, 3])],
                                [_f("x")], [_f("y", (1, 3, 4, 4))], [_c("sizes", [4, 4])]),
    "resize-dynamic": _model([helper.make_node("Mul", ["s0", "s0"], ["scales"], name="mk"),
                              helper.make_node("Resize", ["x", "", "scales"], ["y"], name="dyn", mode="linear", axes=[2, 3])],
                             [_f("x"), _f("s0", (2,))], [_f("y", (1, 3, None, None))]),
    "double": _model([helper.make_node("Cast", ["x"], ["d"], name="to_double", to=T.DOUBLE),
                      helper.make_node("Cast", ["d"], ["y"], name="back", to=T.FLOAT)], [_f("x")], [_f("y")]),
    "uint8": _model([helper.make_node("Transpose", ["x"], ["t"], name="t_u8", perm=[0, 3, 1, 2]),
                     helper.make_node("Cast", ["t"], ["y"], name="cast", to=T.FLOAT)],
                    [_f("x", (1, 8, 8, 3), T.UINT8)], [_f("y")]),
    "if-branches": _model([helper.make_node(
        "If", ["c"], ["y"], name="branchy",
        then_branch=helper.make_graph([helper.make_node("Identity", ["x"], ["a"])], "then", [], [_f("a", (1, 3, 8, 8))]),
        else_branch=helper.make_graph([helper.make_node("Identity", ["x"], ["b"]), helper.make_node("Identity", ["x"], ["b2"])],
                                      "else", [], [_f("b", (1, 3, 8, 8)), _f("b2", (1, 3, 8, 8))]))],
        [_f("x"), _f("c", (), T.BOOL)], [_f("y")]),
    "initializer-input": _model([helper.make_node("Add", ["a0", "a0"], ["axes"], name="axes_math"),
                                 helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="rsum", keepdims=0)],
                                [_f("x"), _f("a0", (1,), T.INT64)], [_f("y", (1, 3, 8))]),
    "types": _model([helper.make_node("Softmax", ["x"], ["y"], name="int_softmax")], [_f("x", (2, 3), T.INT32)], [_f("y", (2, 3), T.INT32)]),
}


def test_every_rule_has_a_failing_graph_and_a_source():
    assert set(FAILING) == set(RULES)
    assert all("onnx-tensorrt" in src for src in RULES.values())
    assert "Resize" in operator_matrix()["operators"] and operator_matrix()["opset_max"] >= 18


@pytest.mark.parametrize("rule", sorted(FAILING))
def test_rule_fails_on_its_graph_and_names_the_node(rule):
    model = FAILING[rule]
    report = lint_model(model)
    assert not report.passed and rule in {f.rule for f in report.findings}, report.summary()
    if rule != "opset":
        expected = {"operator": "mmi", "domain": "lc", "resize-antialias": "aa", "resize-attributes": "keep", "resize-dynamic": "dyn",
                    "double": "to_double", "uint8": "t_u8", "if-branches": "branchy", "initializer-input": "rsum", "types": "int_softmax"}[rule]
        assert expected in _nodes(model, rule)
    assert f"[{rule}]" in report.summary() and RULES[rule] in report.summary()


def test_a_clean_graph_passes_and_uint8_input_cast_is_allowed():
    assert lint_model(CLEAN).passed
    cast_in = _model([helper.make_node("Cast", ["x"], ["y"], name="cast", to=T.FLOAT)], [_f("x", (1, 8, 8, 3), T.UINT8)], [_f("y", (1, 8, 8, 3))])
    assert lint_model(cast_in).passed


def test_fixed_size_fused_graphs_pass_and_the_dynamic_clip_graph_fails(fixed_onnx, clip_onnx):
    for path in fixed_onnx.values():
        report = lint_path(path)
        assert report.passed, report.summary()
        assert main(["info", "--model", str(path), "--check", "tensorrt"]) == 0
    dynamic = lint_path(clip_onnx)
    assert not dynamic.passed
    antialias = [f for f in dynamic.findings if f.rule == "resize-antialias"]
    assert antialias and all("Resize" in f.node for f in antialias)
    assert {"uint8", "resize-antialias"} <= {f.rule for f in dynamic.findings}


def test_info_check_tensorrt_exit_status(clip_onnx, capsys, tmp_path):
    assert main(["info", "--model", str(clip_onnx), "--check", "tensorrt"]) == 1
    out = capsys.readouterr().out
    assert "tensorrt check: FAIL" in out and "[resize-antialias]" in out and "Resize" in out
    clean = tmp_path / "clean.onnx"
    onnx.save(CLEAN, clean)
    with pytest.raises(TensorRTLintError, match="engine"):
        lint_path(tmp_path / "model.engine")


def test_engine_export_lints_before_building(clip_run, monkeypatch, tmp_path):
    """With TensorRT 'present', an engine export of a graph TensorRT would refuse stops with the lint report
    before any build: here the fixed-size preprocessing is swapped for the dynamic one."""
    import waste_edge.export.exporter as exporter
    import waste_edge.export.tensorrt as trt_export

    monkeypatch.setattr(trt_export, "require_tensorrt", lambda: None)
    monkeypatch.setattr(trt_export, "build_engine", lambda *a, **k: pytest.fail("the engine build must not start"))
    dynamic = exporter.build_preprocess_model
    monkeypatch.setattr(exporter, "build_preprocess_model", lambda spec, order, **kw: dynamic(spec, order, opset=kw.get("opset", 18)))
    with pytest.raises(TensorRTLintError, match=r"(?s)not building the engine.*resize-antialias"):
        exporter.export(clip_run, "engine", out=tmp_path / "m.engine", progress=False)
    assert not (tmp_path / "m.engine").exists()
