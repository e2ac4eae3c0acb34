"""Load-time validation: a model, its metadata, an engine sidecar, a model card, a run's card.json / head.json
are user input. Each hostile variant is generated here and must fail in one line (or load correctly)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from tests.faults.conftest import assert_one_line_error
from tests.runtime.tiny_model import make_fused_model, tiny_metadata, write_sidecar

BOMB = "[" * 100_000 + "]" * 100_000


def _with_props(src: Path, dst: Path, **override: str) -> Path:
    m = onnx.load(str(src))
    for p in m.metadata_props:
        key = p.key.split(".", 1)[1]
        if key in override:
            p.value = override[key]
    onnx.save(m, str(dst))
    return dst


META_CASES = {
    "format-version-not-json": ({"format_version": "abc"}, "format_version"),
    "format-version-newer": ({"format_version": "99"}, "newer"),
    "input-size-string": ({"input_size": '"x"'}, "input_size"),
    "input-size-zero": ({"input_size": "[0, 0]"}, "input_size"),
    "input-size-huge": ({"input_size": "[100000, 100000]"}, "input_size"),
    "input-size-float": ({"input_size": "[224.5, 224]"}, "input_size"),
    "classes-nested": ({"classes": '[["B"], "N"]'}, "classes"),
    "classes-duplicate": ({"classes": '["B", "B"]'}, "more than once"),
    "classes-one": ({"classes": '["B"]', "display_names": '["b"]'}, "classes"),
    "classes-ten-thousand": ({"classes": json.dumps([f"c{i}" for i in range(10_000)]), "display_names": json.dumps([f"c{i}" for i in range(10_000)])}, "classes"),
    "classes-json-bomb": ({"classes": BOMB}, "nested too deeply"),
    "classes-newline": ({"classes": '["B\\nx", "N"]'}, "classes"),
    "display-names-short": ({"display_names": '["only one"]'}, "display name"),
    "channel-order-bad": ({"channel_order": "BRG"}, "channel_order"),
    "extra-not-object": ({"extra": "[1]"}, "extra"),
    "preprocess-not-object": ({"preprocess": "7"}, "preprocess"),
}


@pytest.mark.parametrize("case", sorted(META_CASES))
def test_malformed_metadata_is_one_line(case, model, tmp_path, cli):
    override, needle = META_CASES[case]
    bad = _with_props(model, tmp_path / "bad.onnx", **override)
    for verb in (["info", "--model", bad], ["predict", model, "--model", bad, "--out", tmp_path / "o.csv"]):
        status, _out, err = cli(*verb)
        assert status == 1, err
        assert_one_line_error(err, needle)
    assert not (tmp_path / "o.csv").exists()


FILE_CASES = {
    "zero-bytes": (lambda p: p.write_bytes(b""), ""),
    "random-bytes": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)), ""),
    "text-file": (lambda p: p.write_text("hello\n" * 100), ""),
    "a-folder": (lambda p: p.mkdir(), ""),
    "dangling-symlink": (lambda p: os.symlink(p.parent / "nowhere.onnx", p), ""),
    "symlink-loop": (lambda p: os.symlink(p, p), ""),
    "fifo": (lambda p: os.mkfifo(p), ""),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_unloadable_model_file_is_one_line(case, tmp_path, cli):
    make, needle = FILE_CASES[case]
    path = tmp_path / "m.onnx"
    make(path)
    status, _out, err = cli("info", "--model", path)
    assert status == 1, err
    assert_one_line_error(err, needle)


def test_model_without_metadata_or_wrong_input(tmp_path, cli):
    for path in (make_fused_model(tmp_path / "nometa.onnx", metadata=False),
                 make_fused_model(tmp_path / "float.onnx", input_dtype=TensorProto.FLOAT),
                 make_fused_model(tmp_path / "named.onnx", input_name="pixels")):
        status, _out, err = cli("predict", tmp_path, "--model", path, "--out", tmp_path / "o.csv")
        assert status == 1
        assert_one_line_error(err)


SIDECARS = {
    "not-json": "not json",
    "a-list": "[1, 2]",
    "empty-object": "{}",
    "metadata-number": '{"metadata": 5, "tensorrt_version": "10", "compute_capability": "8.9"}',
    "json-bomb": BOMB,
    "duplicate-classes": None,
}


@pytest.mark.parametrize("case", sorted(SIDECARS))
def test_bad_engine_sidecar_is_one_line(case, tmp_path, cli):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 64)
    if SIDECARS[case] is None:
        meta = tiny_metadata().to_json()
        meta["classes"] = ["B", "B"]
        Path(str(engine) + ".json").write_text(json.dumps({"metadata": meta, "tensorrt_version": "10", "compute_capability": "8.9"}))
    else:
        Path(str(engine) + ".json").write_text(SIDECARS[case])
    status, _out, err = cli("info", "--model", engine)
    assert status == 1, err
    assert_one_line_error(err)


def test_sidecar_not_utf8(tmp_path, cli):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 64)
    write_sidecar(engine)
    Path(str(engine) + ".json").write_bytes(b"\xff\xfe{")
    status, _out, err = cli("info", "--model", engine)
    assert status == 1
    assert_one_line_error(err, "UTF-8")


CARDS = {"not-utf8": b"\xff\xfe", "a-list": b"[1]", "bomb": BOMB.encode(), "wrong-types": b'{"metrics": [1], "data": 5, "encoder_weights": "x"}',
         "metrics-strings": b'{"metrics": {"test": {"accuracy": "high"}}}'}


@pytest.mark.parametrize("case", sorted(CARDS))
def test_model_card_beside_model(case, model, tmp_path, cli):
    path = tmp_path / "m.onnx"
    path.write_bytes(model.read_bytes())
    (tmp_path / "m.json").write_bytes(CARDS[case])
    status, out, err = cli("info", "--model", path)
    if case in ("wrong-types", "metrics-strings"):  # a readable object: shown, what is unusable left out
        assert status == 0 and "classes" in out, err
    else:
        assert status == 1
        assert_one_line_error(err, "model card")


RUN_CARDS = {
    "card-not-utf8": b"\xff\xfe\x00",
    "card-a-list": b"[]",
    "card-bomb": BOMB.encode(),
    "card-empty-object": b"{}",
    "card-missing-keys": b'{"format": "waste-edge-run", "version": 1}',
}


@pytest.mark.parametrize("case", sorted(RUN_CARDS))
def test_bad_run_card_is_one_line(case, tmp_path, cli, images):
    run = tmp_path / "run"
    run.mkdir()
    (run / "card.json").write_bytes(RUN_CARDS[case])
    for verb in (["eval", run, "--data", images], ["export", run, "--out", tmp_path / "x.onnx"]):
        status, _out, err = cli(*verb)
        assert status == 1, err
        assert_one_line_error(err)
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("value", ['"abc"', "-1", "NaN", "true", "[1]"])
def test_head_hyperparameter_must_be_a_positive_number(value):
    from waste_edge.train.head import HeadError, LinearHead

    head = LinearHead(["B", "N"], np.zeros((1, 4)), np.zeros(1), False, {"C": 1.0})
    doc = json.loads(json.dumps({**head._content(), "sha256": head.sha256()}))
    doc["hyperparameters"] = {"C": json.loads(value)}
    with pytest.raises(HeadError, match="hyperparameter C"):
        LinearHead.from_dict(doc)


def test_predict_after_close_is_a_clear_error(model):
    from waste_edge.runtime.classifier import Classifier, ClassifierClosedError

    clf = Classifier(model, threads=1)
    clf.close()
    with pytest.raises(ClassifierClosedError, match="closed"):
        clf.predict(np.zeros((8, 8, 3), np.uint8))
