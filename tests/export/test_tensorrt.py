"""TensorRT engine export: the sidecar contract everywhere, the build only on a GPU."""

from __future__ import annotations

import numpy as np
import pytest

from waste_edge.export.exporter import ExportOptions, export
from waste_edge.export.tensorrt import DEFAULT_ENGINE_IMGSZ, TensorRTError, calibration_batches, engine_loader, profile_shapes, timing_cache_path
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


@pytest.mark.parametrize("variant", ["fp32", "half", "int8"])
def test_polygraphy_loader_chain_carries_precision_profile_and_timing_cache(tmp_path, variant):
    """The build is Polygraphy loaders composed without TensorRT: check what each one will be asked to do."""
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, PostprocessNetwork

    engine = tmp_path / "m.engine"
    opts = ExportOptions(batch=4, dynamic=True, imgsz=(480, 640), half=variant == "half", int8=variant == "int8")
    loader = engine_loader(tmp_path / "m.onnx", engine, opts, calibrator="calibrator-sentinel" if variant == "int8" else None)
    assert isinstance(loader, EngineBytesFromNetwork)
    assert loader.timing_cache_path == str(timing_cache_path(engine)) == str(engine) + ".timing.cache"
    config = loader._config
    assert isinstance(config, CreateConfig)
    reduced = variant != "fp32"
    assert bool(config.fp16) == reduced and bool(config.int8) == (variant == "int8")
    assert config.precision_constraints == ("obey" if reduced else None)
    assert config.timing_cache_path is None  # no cache yet; a rebuild loads the saved one
    (profile,) = config.profiles
    shapes = profile["image"]
    assert (tuple(shapes.min), tuple(shapes.opt), tuple(shapes.max)) == ((1, 480, 640, 3), (4, 480, 640, 3), (4, 480, 640, 3))
    network = loader._network
    assert isinstance(network, PostprocessNetwork if reduced else NetworkFromOnnxPath)
    if variant == "int8":
        assert config.calibrator == "calibrator-sentinel"
    timing_cache_path(engine).write_bytes(b"cache")
    assert engine_loader(tmp_path / "m.onnx", engine, opts)._config.timing_cache_path == str(timing_cache_path(engine))


def test_calibration_batches_are_camera_frames_in_the_model_channel_order(export_images):
    opts = ExportOptions(batch=2, imgsz=(48, 64), int8=True, calib=export_images)
    batches = list(calibration_batches(opts, "BGR"))
    assert len(batches) == 4  # 8 images, batch 2
    for b in batches:
        assert b["image"].dtype == np.uint8 and b["image"].shape == (2, 48, 64, 3)
    rgb = list(calibration_batches(opts, "RGB", limit=1))
    assert len(rgb) == 1 and np.array_equal(rgb[0]["image"], batches[0]["image"][..., ::-1])


def test_engine_frames_default_to_vga():
    assert DEFAULT_ENGINE_IMGSZ == (480, 640)


@pytest.mark.skipif(tensorrt_available(), reason="checks the message on machines without TensorRT")
def test_engine_export_without_a_gpu_says_what_is_missing(clip_run):
    with pytest.raises(TensorRTError, match="GPU with TensorRT"):
        export(clip_run, "engine", progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(not tensorrt_available(), reason="needs an NVIDIA GPU with TensorRT and Polygraphy")
@pytest.mark.parametrize("opts", [{}, {"half": True}])
def test_engine_build_and_parity(clip_run, export_images, tmp_path, opts):
    from waste_edge.export.parity import run_parity

    res = export(clip_run, "engine", out=tmp_path / "m.engine", dynamic=True, batch=4, progress=False, **opts)
    assert res.path.is_file() and (tmp_path / "m.engine.json").is_file() and (tmp_path / "m.engine.timing.cache").is_file()
    report = run_parity(res.path, clip_run, export_images, progress=False)
    assert report.agreement >= 0.995, report.summary()
