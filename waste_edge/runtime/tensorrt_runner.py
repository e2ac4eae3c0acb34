"""Native TensorRT backend for `.engine` files: Polygraphy's `TrtRunner` behind our sidecar check.

A serialised TensorRT engine only runs on the TensorRT version and GPU architecture that built it; anything else
fails deep inside deserialisation or, worse, runs wrongly. So every engine travels with `<file>.engine.json` (the
model metadata plus the TensorRT version and compute capability it was built with), and this backend refuses a
mismatch with a message that says to rebuild the engine. Polygraphy has no such guard; everything else (engine
deserialisation, device buffers, streams, copies) is Polygraphy's `EngineFromPath` + `TrtRunner`, whose CUDA
wrapper (ctypes over libcudart) also answers the device count and compute capability, so no CUDA bindings are
needed beyond TensorRT and Polygraphy (the `[tensorrt]` extra).

`tensorrt` and `polygraphy` are imported inside functions only: this module imports on any machine, and its
tests skip without a GPU. The sidecar check is a pure function so it is tested everywhere.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from waste_edge.runtime.metadata import INPUT_NAME, MetadataError, ModelMetadata
from waste_edge.runtime.runners import BackendError, Runner

# cudaDeviceAttr values of the CUDA runtime API (stable since CUDA 5).
_CUDA_ATTR_CC_MAJOR, _CUDA_ATTR_CC_MINOR = 75, 76


class EngineMismatchError(BackendError):
    """The engine was built for another TensorRT version or GPU architecture."""


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(str(engine_path) + ".json")


def read_engine_sidecar(engine_path: str | Path) -> dict[str, Any]:
    """The sidecar JSON of an engine, or a `BackendError` saying it is missing or unreadable."""
    side = sidecar_path(engine_path)
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackendError(f"{side.name} is missing: a TensorRT engine needs the sidecar written by `waste-edge export --format engine`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BackendError(f"{side}: unreadable engine sidecar: {e}") from None
    if not isinstance(data, dict):
        raise BackendError(f"{side}: engine sidecar must be a JSON object")
    return data


def check_engine_sidecar(
    sidecar: Mapping[str, Any],
    *,
    tensorrt_version: str,
    compute_capability: str,
    name: str = "engine",
) -> ModelMetadata:
    """Metadata of an engine whose sidecar matches this machine; `EngineMismatchError` (rebuild it) otherwise."""
    for key in ("metadata", "tensorrt_version", "compute_capability"):
        if key not in sidecar:
            raise BackendError(f"{name}: engine sidecar lacks {key!r}; rebuild the engine with `waste-edge export --format engine`")
    built_trt = str(sidecar["tensorrt_version"])
    built_cc = str(sidecar["compute_capability"])
    problems = []
    if built_trt != str(tensorrt_version):
        problems.append(f"TensorRT {built_trt}, this machine has {tensorrt_version}")
    if built_cc != str(compute_capability):
        problems.append(f"GPU compute capability {built_cc}, this GPU is {compute_capability}")
    if problems:
        raise EngineMismatchError(
            f"{name} was built for {' and '.join(problems)}: rebuild the engine on this machine "
            "(waste-edge export --format engine ...) or run the .onnx model instead"
        )
    try:
        return ModelMetadata.from_json(sidecar["metadata"])
    except MetadataError as e:
        raise BackendError(f"{name}: {e}") from None
    except (AttributeError, TypeError) as e:
        raise BackendError(f"{name}: malformed metadata in the engine sidecar: {e}") from None


def _cudart() -> Any:
    """libcudart through Polygraphy's ctypes wrapper (raises when no CUDA runtime library is installed)."""
    from polygraphy import cuda

    return cuda.wrapper()


def _device_attribute(attr: int, device: int) -> int:
    wrapper = _cudart()
    value = ctypes.c_int(0)
    wrapper.check(wrapper.handle.cudaDeviceGetAttribute(ctypes.byref(value), ctypes.c_int(attr), ctypes.c_int(device)))
    return int(value.value)


@functools.lru_cache(maxsize=1)
def tensorrt_available() -> bool:
    """True when tensorrt, polygraphy and at least one CUDA GPU are present (imports them only if installed)."""
    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("polygraphy") is None:
        return False
    try:
        wrapper = _cudart()
        count = ctypes.c_int(0)
        wrapper.check(wrapper.handle.cudaGetDeviceCount(ctypes.byref(count)))
        return count.value > 0
    except Exception:  # no driver, no device, no libcudart, broken install: all mean "not here"
        return False


def compute_capability(device: int = 0) -> str:
    """"major.minor" of a CUDA device, the architecture an engine is tied to."""
    return f"{_device_attribute(_CUDA_ATTR_CC_MAJOR, device)}.{_device_attribute(_CUDA_ATTR_CC_MINOR, device)}"


class TensorRTRunner(Runner):
    """An engine after the sidecar check, run by Polygraphy's `TrtRunner` (device buffers, stream, copies)."""

    backend = "tensorrt"

    def __init__(self, path: str | Path, device: int = 0) -> None:
        super().__init__()
        self.path = Path(path)
        self.device = device
        self.provider = "TensorRT (native engine, Polygraphy TrtRunner)"
        self.metadata: ModelMetadata | None = None
        self._runner: Any = None

    def activate(self) -> None:
        if not tensorrt_available():
            raise BackendError(f"{self.path.name}: the TensorRT backend needs tensorrt, polygraphy and a CUDA GPU (pip install 'waste-edge[tensorrt]')")
        import tensorrt as trt
        from polygraphy.backend.trt import EngineFromPath, TrtRunner

        self.metadata = check_engine_sidecar(
            read_engine_sidecar(self.path),
            tensorrt_version=trt.__version__,
            compute_capability=compute_capability(self.device),
            name=self.path.name,
        )
        runner = TrtRunner(EngineFromPath(str(self.path)), name=self.path.name)
        try:
            runner.activate()
        except Exception as e:  # TensorRT / Polygraphy raise their own types when deserialisation fails
            raise BackendError(f"{self.path.name}: TensorRT could not load the engine ({type(e).__name__}: {e}); rebuild it on this machine") from None
        self._runner = runner
        engine = runner.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._input_shape = tuple(int(d) if int(d) >= 0 else None for d in engine.get_tensor_shape(INPUT_NAME))
        self.is_active = True

    def infer(self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        result = self._runner.infer({k: np.ascontiguousarray(v) for k, v in feed.items()})
        names = list(outputs) if outputs is not None else self._outputs
        return {n: np.asarray(result[n]) for n in names}

    def run(self, names: list[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        out = self.infer(feed, names)
        return [out[n] for n in names]

    def deactivate(self) -> None:
        if self._runner is not None and self._runner.is_active:
            self._runner.deactivate()
        self._runner = None
        self.is_active = False

    def custom_metadata(self) -> dict[str, str]:
        assert self.metadata is not None
        return self.metadata.to_props()

    def input_shape(self) -> tuple[int | None, ...]:
        return self._input_shape

    def output_names(self) -> list[str]:
        return list(self._outputs)
