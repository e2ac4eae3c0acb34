"""TensorRT engine build from the fused ONNX model through Polygraphy, with the sidecar that makes engines safe to ship.

The build is a chain of Polygraphy loaders (`engine_loader`): `NetworkFromOnnxPath` -> `PostprocessNetwork` (pin
layers to fp32) -> `CreateConfig` (fp16 / int8, `precision_constraints="obey"`, the optimisation profile, the INT8
`Calibrator`, a timing cache) -> `EngineBytesFromNetwork`, which saves the timing cache next to the engine
(`<engine>.timing.cache`) so a rebuild of the same graph on the same GPU skips most tactic timing.

Only the fixed-size fused graph is built (`--imgsz`, default 480 640): its preprocessing is Pillow's taps as
constants, which the TensorRT lint (`tensorrt_lint.py`) passes, while the dynamic graph's antialiased `Resize`,
UINT8 tensors and `If` are refused by TensorRT's parser. The export lints the graph before building and stops with
the report.

An engine only runs on the TensorRT version and GPU architecture that built it, so the build writes
`<engine>.json` (the fused model's metadata + TensorRT version + compute capability); the runtime's TensorRT
backend refuses a mismatch with a message to rebuild (`runtime/backends/engine_sidecar.py`).

Precision: naive FP16 ruins ViT accuracy (LayerNorm / softmax / reductions overflow or lose precision, TensorRT
issues 2709 and 2564), and the exact preprocessing needs fp32 (its sums reach 2^24). Under --half / --int8 the
network is built with those layers pinned to fp32 and the constraints obeyed, while convolutions and matrix
multiplies run in fp16 / int8. The preprocessing stays exact even where TensorRT picks TF32 for its MatMuls: every
operand is an integer of at most 11 significant bits (pixels, weight halves), exact in TF32, and TF32 accumulates
in fp32. INT8: entropy calibration on real images at the engine's frame size (`--calib`).

`tensorrt` and `polygraphy` are imported inside functions: this module imports anywhere and the TensorRT-free
parts (profile, calibration batches, loader composition, sidecar) are tested everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from waste_edge._io import atomic_write_bytes
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.backends.engine_sidecar import make_sidecar, write_sidecar
from waste_edge.runtime.backends.tensorrt import compute_capability, tensorrt_available
from waste_edge.runtime.metadata import INPUT_NAME, ModelMetadata

DEFAULT_ENGINE_IMGSZ = (480, 640)  # H, W of a VGA camera frame: what --format engine builds for without --imgsz
# Layer kinds kept in fp32 under --half / --int8 (names of tensorrt.LayerType members).
FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE", "SHAPE", "GATHER", "SLICE", "CONSTANT", "TOPK", "SELECT")
FP32_LAYER_NAME_HINTS = ("LayerNorm", "layer_norm", "ln_", "Softmax", "ReduceMean", "Pow", "Sqrt", "Erf", "head/", "pre/")
CALIBRATION_BATCHES = 64  # INT8 calibration: at most this many batches of real photos


class TensorRTError(WasteEdgeError):
    """No GPU / TensorRT here, or the engine build failed."""


def require_tensorrt() -> None:
    if not tensorrt_available():
        raise TensorRTError(
            "--format engine needs an NVIDIA GPU with TensorRT and Polygraphy (pip install 'waste-edge[tensorrt]'); "
            "on this machine export --format onnx instead (check the graph with `waste-edge info --model M --check tensorrt`)"
        )


def timing_cache_path(engine_path: str | Path) -> Path:
    return Path(str(engine_path) + ".timing.cache")


def profile_shapes(opts: Any, size_hint: tuple[int, int] = DEFAULT_ENGINE_IMGSZ) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) input shapes of the optimisation profile: the batch range, and the frame size (fixed with
    --imgsz; otherwise 32 px up to 4096 px, optimised for a VGA frame)."""
    bmax = max(1, int(opts.batch))
    bmin = 1 if opts.dynamic else bmax
    if opts.imgsz:
        h, w = opts.imgsz
        lo, hi, mid = (h, w), (h, w), (h, w)
    else:
        lo, hi, mid = (32, 32), (4096, 4096), size_hint
    return {INPUT_NAME: ((bmin, *lo, 3), (bmax, *mid, 3), (bmax, *hi, 3))}


def calibration_batches(opts: Any, channel_order: str, *, limit: int = CALIBRATION_BATCHES) -> Iterator[dict[str, np.ndarray]]:
    """Polygraphy data-loader batches for INT8 calibration: real photos from --calib, resized to the engine's frame
    size like a camera would deliver them (cv2 INTER_AREA), in the model's channel order, at the profile's optimum
    batch (TensorRT calibrates at that shape only). Undecodable files are skipped."""
    import cv2

    from waste_edge.data.decode import DecodeError, load_rgb_array
    from waste_edge.export.quantize import calibration_images

    shape = profile_shapes(opts)[INPUT_NAME][1]
    batch, (h, w) = shape[0], shape[1:3]
    frames: list[np.ndarray] = []
    produced = 0
    for path in calibration_images(opts.calib):
        try:
            img = load_rgb_array(path)
        except DecodeError:
            continue
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        frames.append(img[..., ::-1] if channel_order == "BGR" else img)
        if len(frames) == batch:
            yield {INPUT_NAME: np.ascontiguousarray(np.stack(frames))}
            frames, produced = [], produced + 1
            if produced >= limit:
                return


def _pin_fp32(network: Any) -> None:
    """Keep normalisation, softmax, reductions, the exact preprocessing (pre/) and the head (head/) in fp32."""
    import tensorrt as trt

    kinds = {getattr(trt.LayerType, k) for k in FP32_LAYER_TYPES if hasattr(trt.LayerType, k)}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in kinds or any(h in layer.name for h in FP32_LAYER_NAME_HINTS):
            floats = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in (trt.float32, trt.float16)]
            if not floats:
                continue
            layer.precision = trt.float32
            for j in floats:
                layer.set_output_type(j, trt.float32)


def engine_loader(onnx_path: str | Path, engine_path: str | Path, opts: Any, *, calibrator: Any = None) -> Any:
    """The Polygraphy loader chain that builds the serialised engine when called (composable, no TensorRT needed
    until then): network from the ONNX file, fp32 pins under reduced precision, config, build + timing cache."""
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, PostprocessNetwork, Profile

    network = NetworkFromOnnxPath(str(onnx_path))
    reduced = bool(opts.half or opts.int8)
    if reduced:
        network = PostprocessNetwork(network, _pin_fp32, name="pin-fp32")
    profile = Profile()
    for name, (lo, opt, hi) in profile_shapes(opts).items():
        profile.add(name, min=lo, opt=opt, max=hi)
    cache = timing_cache_path(engine_path)
    config_args: dict[str, Any] = {
        "fp16": reduced or None,
        "int8": bool(opts.int8) or None,
        "precision_constraints": "obey" if reduced else None,
        "profiles": [profile],
        "calibrator": calibrator,
        "load_timing_cache": str(cache) if cache.is_file() else None,
    }
    if opts.workspace:
        import tensorrt as trt

        config_args["memory_pool_limits"] = {trt.MemoryPoolType.WORKSPACE: int(opts.workspace * (1 << 30))}
    return EngineBytesFromNetwork(network, CreateConfig(**config_args), save_timing_cache=str(cache))


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    metadata: ModelMetadata,
    opts: Any,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build with the requested precision through Polygraphy, write `engine_path` + its sidecar + the timing cache."""
    import tensorrt as trt
    from polygraphy.backend.trt import Calibrator

    calibrator = None
    if opts.int8:
        if opts.calib is None:
            raise TensorRTError("--int8 for a TensorRT engine needs --calib DIR of real images")
        calibrator = Calibrator(calibration_batches(opts, metadata.channel_order), cache=str(engine_path) + ".calib")
    if log:
        log(f"building the TensorRT {trt.__version__} engine with Polygraphy ({'int8' if opts.int8 else 'fp16' if opts.half else 'fp32'}; timing cache {timing_cache_path(engine_path).name})")
    try:
        serialized = engine_loader(onnx_path, engine_path, opts, calibrator=calibrator)()
    except Exception as e:  # Polygraphy raises PolygraphyException on parser / builder failures
        raise TensorRTError(f"TensorRT failed to build an engine from {onnx_path}: {e}") from None
    atomic_write_bytes(engine_path, bytes(serialized))
    cc = compute_capability()
    write_sidecar(engine_path, make_sidecar(metadata, trt.__version__, cc, profile=profile_shapes(opts), fp16=bool(opts.half or opts.int8),
                                            int8=bool(opts.int8), onnx=onnx_path.name, timing_cache=timing_cache_path(engine_path).name))
    return {"tensorrt_version": trt.__version__, "compute_capability": cc, "timing_cache": str(timing_cache_path(engine_path))}
