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


def test_export_refuses_a_head_that_answers_nan(clip_run, tmp_path, capsys):
    """Issue 25: a head with 1e300 coefficients passed the float64 checks and exported a model answering NaN
    (labelled B). Weights that overflow float32 are refused before the export starts; nothing is written."""
    import shutil

    from waste_edge.train.head import LinearHead

    run = tmp_path / "run"
    shutil.copytree(clip_run, run)
    head = LinearHead.load(run / "head.json")
    bad = LinearHead(head.classes, head.coef * 0 + 1e300, head.intercept, head.l2_normalize, head.hyperparameters)
    bad.save(run / "head.json")
    card = json.loads((run / "card.json").read_text())
    card["head"]["sha256"] = bad.sha256()  # a consistent run, as training such a head would write it
    (run / "card.json").write_text(json.dumps(card))
    out = tmp_path / "m.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "overflow float32" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_fused_model_answering_nan_is_never_written(tmp_path):
    """The last gate of every export: probe frames must give finite probabilities summing to 1, else nothing is
    written (not even over an earlier file), and no temporary file is left."""
    import pytest

    from tests.runtime.tiny_model import make_fused_model
    from waste_edge.export.exporter import write_probed
    from waste_edge.export.fused import ExportError

    good = onnx.load(make_fused_model(tmp_path / "good.onnx", channel_order="BGR"))
    nan = onnx.load(make_fused_model(tmp_path / "nan.onnx", channel_order="BGR", scale=float("nan")))
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    assert write_probed(out, good) == out and out.is_file()
    before = out.read_bytes()
    with pytest.raises(ExportError, match="not writing .*non-finite"):
        write_probed(out, nan)
    assert out.read_bytes() == before and sorted(p.name for p in out.parent.iterdir()) == ["m.onnx"]
