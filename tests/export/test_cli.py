"""`waste-edge export` and `waste-edge parity` end to end through the CLI."""

from __future__ import annotations

import json

import onnx
from onnx import numpy_helper

from waste_edge.cli import main


def test_export_then_parity_cli(clip_run, export_images, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", str(clip_run), "--format", "onnx", "--out", str(out), "--dynamic", "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out and out.is_file()
    report = tmp_path / "parity.json"
    assert main(["parity", str(out), "--run", str(clip_run), "--data", str(export_images), "--json", str(report), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "label agreement   100.00%" in text and "PASS" in text
    doc = json.loads(report.read_text())
    assert doc["n"] == 8 and doc["passed"] and doc["agreement"] == 1.0 and doc["worst"]["embedding_cosine"] > 0.999


def test_parity_exits_1_when_the_model_disagrees(clip_run, clip_onnx, export_images, tmp_path, capsys):
    """A model whose head weights were tampered with (metadata intact) must fail parity, naming the figures."""
    model = onnx.load(clip_onnx)
    for t in model.graph.initializer:
        if t.name.startswith("head/weight"):
            w = numpy_helper.to_array(t)
            t.CopyFrom(numpy_helper.from_array(-w * 3 + 0.5, t.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, bad)
    rc = main(["parity", str(bad), "--run", str(clip_run), "--data", str(export_images), "--quiet"])
    assert rc == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "worst image" in out


def test_parity_refuses_a_model_from_another_run(clip_onnx, lite0_run, export_images, capsys):
    assert main(["parity", str(clip_onnx), "--run", str(lite0_run), "--data", str(export_images), "--quiet"]) == 1
    assert "head" in capsys.readouterr().err


def test_export_unsupported_option_is_a_one_line_error(clip_run, capsys):
    assert main(["export", str(clip_run), "--format", "onnx", "--workspace", "4"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: format 'onnx' does not support --workspace"


def test_export_unknown_int8_scheme_is_a_one_line_error(clip_run, capsys):
    assert main(["export", str(clip_run), "--int8", "--int8-scheme", "u4"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown INT8 scheme 'u4': choose one of u8s8-7bit-bc, u8s8-7bit, ") and "\n" not in err
