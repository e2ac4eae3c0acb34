"""TensorRT engine export: the sidecar contract everywhere, the build only on a GPU."""

from __future__ import annotations

import pytest

from waste_edge.export.exporter import ExportOptions, export
from waste_edge.export.tensorrt import TensorRTError, profile_shapes
from waste_edge.runtime.backends.engine_sidecar import make_sidecar, write_sidecar
from waste_edge.runtime.backends.tensorrt import tensorrt_available
from waste_edge.runtime.metadata import ModelMetadata

META = ModelMetadata(
    classes=["B", "N"], display_names=["biodegradable", "non-biodegradable"], channel_order="BGR",
    preprocess={"size": 224}, encoder="effnet-lite0", head_sha256="ab" * 32, toolkit_version="0.1.0", variant="fp16",
)


def test_sidecar_round_trips_through_the_runtime_check(tmp_path):
    from waste_edge.runtime.backends.engine_sidecar import EngineMismatchError, read_sidecar, validate_sidecar

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not a real engine")
    write_sidecar(engine, make_sidecar(META, "10.13.0", "8.7", fp16=True))
    side = read_sidecar(engine)
    assert validate_sidecar(side, tensorrt_version="10.13.0", compute_capability="8.7") == META
    with pytest.raises(EngineMismatchError, match="rebuild"):
        validate_sidecar(side, tensorrt_version="10.13.0", compute_capability="9.0")
    with pytest.raises(EngineMismatchError, match="TensorRT 10.13.0"):
        validate_sidecar(side, tensorrt_version="10.14.1", compute_capability="8.7")


def test_profile_covers_the_batch_range_and_frame_sizes():
    dyn = profile_shapes(ExportOptions(dynamic=True, batch=8))["image"]
    assert dyn[0][0] == 1 and dyn[1][0] == 8 and dyn[2][0] == 8
    assert dyn[0][1:] == (32, 32, 3) and dyn[2][1:] == (4096, 4096, 3)
    fixed = profile_shapes(ExportOptions(batch=2, imgsz=(480, 640)))["image"]
    assert fixed == ((2, 480, 640, 3),) * 3


@pytest.mark.skipif(tensorrt_available(), reason="checks the message on machines without TensorRT")
def test_engine_export_without_a_gpu_says_what_is_missing(clip_run):
    with pytest.raises(TensorRTError, match="GPU with TensorRT"):
        export(clip_run, "engine", progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(not tensorrt_available(), reason="needs an NVIDIA GPU with TensorRT and cuda-python")
@pytest.mark.parametrize("opts", [{}, {"half": True}])
def test_engine_build_and_parity(clip_run, export_images, tmp_path, opts):
    from waste_edge.export.parity import run_parity

    res = export(clip_run, "engine", out=tmp_path / "m.engine", dynamic=True, batch=4, progress=False, **opts)
    assert res.path.is_file() and (tmp_path / "m.engine.json").is_file()
    report = run_parity(res.path, clip_run, export_images, progress=False)
    assert report.agreement >= 0.995, report.summary()
