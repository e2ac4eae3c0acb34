import json

import pytest

from tests.runtime.tiny_model import tiny_metadata, write_sidecar
from waste_edge.runtime.classifier import Classifier
from waste_edge.runtime.backends.base import BackendError
from waste_edge.runtime.backends.engine_sidecar import EngineMismatchError, read_sidecar, sidecar_path, validate_sidecar
from waste_edge.runtime.backends.select import available_backends, candidate_backends
from waste_edge.runtime.backends.tensorrt import TensorRTRunner, tensorrt_available


def sidecar(trt="10.3.0", cc="8.9", **extra):
    return {"metadata": tiny_metadata(channel_order="BGR").to_json(), "tensorrt_version": trt, "compute_capability": cc, **extra}


def test_matching_sidecar_gives_the_metadata():
    meta = validate_sidecar(sidecar(), tensorrt_version="10.3.0", compute_capability="8.9")
    assert meta.classes == ["B", "N"] and meta.channel_order == "BGR"


@pytest.mark.parametrize(
    "trt, cc, match",
    [
        ("10.0.1", "8.9", "TensorRT 10.3.0, this machine has 10.0.1"),
        ("10.3.0", "8.7", "compute capability 8.9, this GPU is 8.7"),
        ("8.6.1", "9.0", "TensorRT 10.3.0.*and GPU compute capability 8.9"),
    ],
)
def test_mismatch_refuses_with_rebuild_message(trt, cc, match):
    with pytest.raises(EngineMismatchError, match=match) as err:
        validate_sidecar(sidecar(), tensorrt_version=trt, compute_capability=cc, name="m.engine")
    assert "rebuild the engine" in str(err.value)
    assert str(err.value).startswith("m.engine")


def test_incomplete_or_malformed_sidecar():
    bad = sidecar()
    del bad["compute_capability"]
    with pytest.raises(BackendError, match="lacks 'compute_capability'"):
        validate_sidecar(bad, tensorrt_version="10.3.0", compute_capability="8.9")
    broken = sidecar()
    broken["metadata"] = {"classes": ["B"], "display_names": ["b"], "channel_order": "BGR"}
    with pytest.raises(BackendError):
        validate_sidecar(broken, tensorrt_version="10.3.0", compute_capability="8.9")


def test_read_sidecar(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 16)
    with pytest.raises(BackendError, match="m.engine.json is missing"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("{not json")
    with pytest.raises(BackendError, match="unreadable engine sidecar"):
        read_sidecar(engine)
    write_sidecar(engine)
    assert json.loads(sidecar_path(engine).read_text())["tensorrt_version"] == read_sidecar(engine)["tensorrt_version"]


def test_engine_runs_only_on_the_tensorrt_backend(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 16)
    write_sidecar(engine)
    with pytest.raises(BackendError, match="runs on tensorrt, not on 'cpu'"):
        candidate_backends(engine, "cpu")


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT and a GPU are present here")
def test_engine_without_tensorrt_is_a_clear_error(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 16)
    write_sidecar(engine)
    assert available_backends(engine) == []
    with pytest.raises(BackendError, match="needs a CUDA GPU with TensorRT"):
        Classifier(engine)
    with pytest.raises(BackendError, match="TensorRT backend needs tensorrt"):
        TensorRTRunner(engine).activate()


@pytest.mark.gpu
def test_sidecar_mismatch_is_refused_on_a_real_gpu(tmp_path):
    if not tensorrt_available():
        pytest.skip("needs TensorRT, cuda-python and a CUDA GPU")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 16)
    write_sidecar(engine, tensorrt_version="0.0.0")
    with pytest.raises(EngineMismatchError, match="rebuild the engine"):
        Classifier(engine, backend="tensorrt")
