"""benchmarks/vit_levers.py end to end on the tiny ViT run: each lever is a fused model the runtime loads,
differing from the fp32 export only in how its encoder is quantised, and still agreeing with the reference."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import onnx
import pytest

from waste_edge.export.parity import run_parity
from waste_edge.export.quantize import DEFAULT_INT8_SCHEME, SATURATION_FREE_MAX_WEIGHT
from waste_edge.runtime.classifier import Classifier

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def levers_module():
    spec = importlib.util.spec_from_file_location("vit_levers", REPO / "benchmarks" / "vit_levers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def built(levers_module, clip_run, clip_onnx, export_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("levers")
    logged: list[str] = []
    only = ["int8-unfused", "int8-fused", "int8-static-u8"]
    return levers_module.build_levers(clip_run, clip_onnx, out, export_images, only=only, log=logged.append), logged


def test_every_asked_lever_is_built_with_what_changed_in_its_metadata(built):
    levers, logged = built
    assert [lever.name for lever, _, _ in levers] == ["int8-unfused", "int8-fused", "int8-static-u8"], logged
    for lever, path, info in levers:
        clf = Classifier(path, "cpu")
        assert clf.metadata.variant == "int8" and clf.metadata.extra["int8_lever"] == lever.name
        assert json.loads(Path(str(path) + ".lever.json").read_text())["what"] == lever.what
        assert info["int8_weight_peak"] is not None and info["int8_weight_peak"] <= SATURATION_FREE_MAX_WEIGHT  # portable
        assert info["int8_scheme"] == ("u8s8-7bit" if lever.name == "int8-static-u8" else DEFAULT_INT8_SCHEME)  # the lever names its scheme


def test_levers_differ_in_the_encoder_only(built, clip_onnx):
    levers, _ = built
    ops = {lever.name: Counter(n.op_type for n in onnx.load(str(path)).graph.node) for lever, path, _ in levers}
    assert ops["int8-fused"]["QAttention"] == 2 and ops["int8-unfused"]["QAttention"] == 0
    assert ops["int8-unfused"]["MatMulInteger"] > 0 and ops["int8-static-u8"]["QuantizeLinear"] > 0
    fp32 = onnx.load(str(clip_onnx))
    pre_head = sorted(n.name for n in fp32.graph.node if n.name.startswith(("pre/", "head/")))
    for _, path, _ in levers:
        model = onnx.load(str(path))
        assert sorted(n.name for n in model.graph.node if n.name.startswith(("pre/", "head/"))) == pre_head


def test_a_kept_lever_agrees_with_the_reference(built, clip_run, export_images):
    levers, _ = built
    path = next(p for lever, p, _ in levers if lever.name == "int8-fused")
    report = run_parity(path, clip_run, export_images, progress=False)
    assert report.passed and report.agreement >= 0.995, report.summary()


def test_a_second_call_reuses_the_models(levers_module, built, clip_run, clip_onnx, export_images):
    levers, _ = built
    out = levers[0][1].parent
    logged: list[str] = []
    again = levers_module.build_levers(clip_run, clip_onnx, out, export_images, only=["int8-fused"], log=logged.append)
    assert [p for _, p, _ in again] == [p for lever, p, _ in levers if lever.name == "int8-fused"] and not logged
