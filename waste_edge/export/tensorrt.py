"""TensorRT engine build from the fused ONNX model, with the sidecar that makes engines safe to ship.

An engine only runs on the TensorRT version and GPU architecture that built it, so the build writes
`<engine>.json` (the fused model's metadata + TensorRT version + compute capability); the runtime's
TensorRT backend refuses a mismatch with a message to rebuild (`runtime/backends/engine_sidecar.py`).

FP16: naive FP16 ruins ViT accuracy (LayerNorm / softmax / reductions overflow or lose precision,
TensorRT issues 2709 and 2564). The network is built with those layers pinned to fp32
(`OBEY_PRECISION_CONSTRAINTS`) while convolutions and matrix multiplies run in fp16. The preprocessing
(uint8 Resize, integer shape math) and the head are pinned to fp32 too.
INT8: entropy calibration on real images through the same preprocessing (`--calib`).

`tensorrt` and cuda-python are imported inside functions: this module imports anywhere and its tests
skip without a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from waste_edge._io import atomic_write_bytes
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.backends.engine_sidecar import make_sidecar, write_sidecar
from waste_edge.runtime.backends.tensorrt import compute_capability, cuda_check, import_cudart, tensorrt_available
from waste_edge.runtime.metadata import INPUT_NAME, ModelMetadata

# Layer kinds kept in fp32 under --half (names of tensorrt.LayerType members).
FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE", "RESIZE", "SHAPE", "GATHER", "SLICE", "CONSTANT", "TOPK", "SELECT")
FP32_LAYER_NAME_HINTS = ("LayerNorm", "layer_norm", "ln_", "Softmax", "ReduceMean", "Pow", "Sqrt", "Erf", "head/", "pre/")


class TensorRTError(WasteEdgeError):
    """No GPU / TensorRT here, or the engine build failed."""


def require_tensorrt() -> None:
    if not tensorrt_available():
        raise TensorRTError(
            "--format engine needs an NVIDIA GPU with TensorRT and cuda-python (pip install 'waste-edge[tensorrt]'); "
            "on this machine export --format onnx instead"
        )


def profile_shapes(opts: Any, size_hint: tuple[int, int] = (480, 640)) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) input shapes of the optimisation profile: the batch range, and the frame sizes
    (fixed with --imgsz; otherwise 32 px up to 4096 px, optimised for a VGA frame)."""
    bmax = max(1, int(opts.batch))
    bmin = 1 if opts.dynamic else bmax
    if opts.imgsz:
        h, w = opts.imgsz
        lo, hi, mid = (h, w), (h, w), (h, w)
    else:
        lo, hi, mid = (32, 32), (4096, 4096), size_hint
    return {INPUT_NAME: ((bmin, *lo, 3), (bmax, *mid, 3), (bmax, *hi, 3))}


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    metadata: ModelMetadata,
    opts: Any,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Parse `onnx_path`, build with the requested precision, serialise to `engine_path` + sidecar."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # implicit in TensorRT >= 10
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if opts.workspace:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace * (1 << 30)))
    profile = builder.create_optimization_profile()
    for name, (lo, mid, hi) in profile_shapes(opts).items():
        profile.set_shape(name, lo, mid, hi)
    config.add_optimization_profile(profile)
    if opts.half:
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = _pin_fp32(trt, network)
        if log:
            log(f"fp16 with {pinned} layers pinned to fp32 (normalisation, softmax, reductions, preprocessing, head)")
    if opts.int8:
        if opts.calib is None:
            raise TensorRTError("--int8 for a TensorRT engine needs --calib DIR of real images")
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)
        config.int8_calibrator = _make_calibrator(trt, opts, metadata, engine_path, progress)
        config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    atomic_write_bytes(engine_path, bytes(serialized))
    cc = compute_capability()
    write_sidecar(engine_path, make_sidecar(metadata, trt.__version__, cc, profile={k: v for k, v in profile_shapes(opts).items()},
                                            fp16=bool(opts.half or opts.int8), int8=bool(opts.int8), onnx=onnx_path.name))
    return {"tensorrt_version": trt.__version__, "compute_capability": cc}


def _pin_fp32(trt: Any, network: Any) -> int:
    kinds = {getattr(trt.LayerType, k) for k in FP32_LAYER_TYPES if hasattr(trt.LayerType, k)}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in kinds or any(h in layer.name for h in FP32_LAYER_NAME_HINTS):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                if layer.get_output(j).dtype in (trt.float32, trt.float16):
                    layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned


def _make_calibrator(trt: Any, opts: Any, metadata: ModelMetadata, engine_path: Path, progress: bool) -> Any:
    """IInt8EntropyCalibrator2 fed with real images decoded in the model's channel order, batch 1, resized to
    the profile's optimum frame size (TensorRT calibrates dynamic inputs at that shape only)."""
    from waste_edge.data.decode import DecodeError, load_rgb_array
    from waste_edge.export.quantize import calibration_images

    files = calibration_images(opts.calib)
    cache = Path(str(engine_path) + ".calib")
    cudart = import_cudart()
    opt_shape = profile_shapes(opts)[INPUT_NAME][1]
    size = (opt_shape[1], opt_shape[2])

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.files = list(files)
            self.ptr = None
            self.nbytes = 0

        def get_batch_size(self) -> int:
            return int(opt_shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            import cv2

            while self.files:
                path = self.files.pop(0)
                try:
                    img = load_rgb_array(path)
                except DecodeError:
                    continue
                if img.shape[:2] != size:
                    img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
                if metadata.channel_order == "BGR":
                    img = img[..., ::-1]
                x = np.ascontiguousarray(np.repeat(img[None], opt_shape[0], axis=0))
                if x.nbytes > self.nbytes:
                    if self.ptr is not None:
                        cuda_check(cudart.cudaFree(self.ptr))
                    self.ptr, self.nbytes = cuda_check(cudart.cudaMalloc(x.nbytes)), x.nbytes
                cuda_check(cudart.cudaMemcpy(self.ptr, x.ctypes.data, x.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
                return [int(self.ptr)]
            return None

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: Any) -> None:
            atomic_write_bytes(cache, bytes(data))

    return Calibrator()
