"""The one ONNX Runtime session loader: metadata read without a session, the fp16 guard, one error type."""

import dataclasses

import onnx
import pytest

from tests.runtime.tiny_model import make_fused_model, tiny_metadata
from waste_edge.runtime.backends.onnxrt import OrtLoadError, load_session, optimizers_to_disable, read_model_props


@pytest.fixture(scope="module")
def fp16_model(tmp_path_factory):
    path = make_fused_model(tmp_path_factory.mktemp("ort") / "half.onnx")
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, dataclasses.replace(tiny_metadata(), variant="fp16").to_props())
    onnx.save(model, str(path))
    return path


def test_metadata_props_are_read_without_a_session(fp16_model):
    expected = {p.key: p.value for p in onnx.load(str(fp16_model)).metadata_props}
    assert read_model_props(fp16_model) == expected
    assert read_model_props(fp16_model.read_bytes()) == expected
    assert read_model_props(fp16_model)["waste_edge.variant"] == "fp16"


def test_fp16_models_load_without_the_nchwc_transformer(fp16_model, tmp_path):
    assert optimizers_to_disable(fp16_model) == ("NchwcTransformer",)
    assert optimizers_to_disable(make_fused_model(tmp_path / "fp32.onnx")) == ()
    session = load_session(fp16_model, threads=1)
    assert [o.name for o in session.get_outputs()] == ["probabilities", "label"]


def test_any_load_failure_is_one_line_naming_the_model(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\xff\xff not a protobuf")
    with pytest.raises(OrtLoadError, match="garbage.onnx: not an ONNX model"):
        read_model_props(garbage)
    assert optimizers_to_disable(garbage) == ()  # onnxruntime itself then says what is wrong
    for source in (garbage, tmp_path / "missing.onnx", b"\x08\x01garbage"):
        with pytest.raises(OrtLoadError, match="cannot load the model with onnxruntime") as err:
            load_session(source)
        assert "\n" not in str(err.value)


def test_metadata_written_with_the_old_key_spelling_still_reads(tmp_path):
    """Models exported before the rename wrote `normalisation` in `extra`; readers accept both spellings."""
    import json

    from waste_edge.runtime.model_info import read_metadata
    from waste_edge.runtime.model_path import DEFAULT_MODEL

    model = onnx.load(str(DEFAULT_MODEL))
    props = {p.key: p.value for p in model.metadata_props}
    extra = json.loads(props["waste_edge.extra"])
    extra["normalisation"] = extra.pop("normalization")
    props["waste_edge.extra"] = json.dumps(extra)
    onnx.helper.set_model_props(model, props)
    old = tmp_path / "old-spelling.onnx"
    onnx.save(model, str(old))
    assert '"normalisation"' in read_model_props(old)["waste_edge.extra"]
    assert read_metadata(old).extra["normalization"] == extra["normalisation"]