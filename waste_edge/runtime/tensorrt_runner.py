"""Native TensorRT backend for `.engine` files, plus the sidecar check that guards it.

A serialised TensorRT engine only runs on the TensorRT version and GPU architecture that built it;
anything else fails deep inside deserialisation or, worse, runs wrongly. So every engine travels with
`<file>.engine.json` (the model metadata plus the TensorRT version and compute capability it was built
with) and this backend refuses a mismatch with a message that says to rebuild the engine.

`tensorrt` and the CUDA bindings (cuda-python) are imported inside functions only: this module imports
on any machine, and its tests skip without a GPU. The sidecar check is a pure function so it is tested
everywhere.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from waste_edge.runtime.metadata import INPUT_NAME, MetadataError, ModelMetadata
from waste_edge.runtime.runners import BackendError, Runner


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


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


def _cuda_check(result: Any) -> Any:
    """cuda-python returns (error, *values): raise on an error, return the value(s)."""
    cudart = _import_cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise BackendError(f"CUDA error: {err}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


@functools.lru_cache(maxsize=1)
def tensorrt_available() -> bool:
    """True when tensorrt, cuda-python and at least one CUDA GPU are present (imports them only if installed)."""
    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("cuda") is None:
        return False
    try:
        cudart = _import_cudart()
        return int(_cuda_check(cudart.cudaGetDeviceCount())) > 0
    except Exception:  # no driver, no device, broken install: all mean "not here"
        return False


def compute_capability(device: int = 0) -> str:
    cudart = _import_cudart()
    props = _cuda_check(cudart.cudaGetDeviceProperties(device))
    return f"{props.major}.{props.minor}"


class TensorRTRunner(Runner):
    """Deserialises an engine after the sidecar check; one CUDA stream, device buffers grown on demand."""

    backend = "tensorrt"

    def __init__(self, path: str | Path, device: int = 0) -> None:
        super().__init__()
        self.path = Path(path)
        self.device = device
        self.provider = "TensorRT (native engine)"
        self.metadata: ModelMetadata | None = None
        self._device_buffers: dict[str, tuple[int, int]] = {}

    def activate(self) -> None:
        if not tensorrt_available():
            raise BackendError(f"{self.path.name}: the TensorRT backend needs tensorrt, cuda-python and a CUDA GPU (pip install 'waste-edge[tensorrt]')")
        import tensorrt as trt

        cudart = _import_cudart()
        _cuda_check(cudart.cudaSetDevice(self.device))
        self.metadata = check_engine_sidecar(
            read_engine_sidecar(self.path),
            tensorrt_version=trt.__version__,
            compute_capability=compute_capability(self.device),
            name=self.path.name,
        )
        self._trt = trt
        self._cudart = cudart
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise BackendError(f"{self.path.name}: TensorRT could not deserialise the engine; rebuild it on this machine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self._stream = _cuda_check(cudart.cudaStreamCreate())
        self.is_active = True

    def _device_buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._device_buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _cuda_check(self._cudart.cudaFree(ptr))
            ptr = int(_cuda_check(self._cudart.cudaMalloc(max(nbytes, 1))))
            self._device_buffers[name] = (ptr, nbytes)
        return ptr

    def infer(self, feed: Mapping[str, np.ndarray], outputs: Any = None) -> dict[str, np.ndarray]:
        cudart = self._cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        stream = self._stream
        staged = []  # host inputs must outlive the asynchronous copies: keep them until the stream syncs
        for name in self._inputs:
            arr = np.ascontiguousarray(feed[name], dtype=self._dtypes[name])
            staged.append(arr)
            self.context.set_input_shape(name, arr.shape)
            ptr = self._device_buffer(name, arr.nbytes)
            _cuda_check(cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d, stream))
            self.context.set_tensor_address(name, ptr)
        host: dict[str, np.ndarray] = {}
        for name in self._outputs:
            out = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=self._dtypes[name])
            self.context.set_tensor_address(name, self._device_buffer(name, out.nbytes))
            host[name] = out
        if not self.context.execute_async_v3(int(stream)):
            raise BackendError(f"{self.path.name}: TensorRT execution failed")
        for name, out in host.items():
            _cuda_check(cudart.cudaMemcpyAsync(out.ctypes.data, self._device_buffers[name][0], out.nbytes, d2h, stream))
        _cuda_check(cudart.cudaStreamSynchronize(stream))
        del staged
        if outputs is not None:
            return {n: host[n] for n in outputs}
        return host

    def run(self, names: list[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        out = self.infer(feed)
        return [out[n] for n in names]

    def deactivate(self) -> None:
        for ptr, _ in self._device_buffers.values():
            self._cudart.cudaFree(ptr)
        self._device_buffers.clear()
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self.context = None
        self.engine = None
        self.is_active = False

    def custom_metadata(self) -> dict[str, str]:
        assert self.metadata is not None
        return self.metadata.to_props()

    def input_shape(self) -> tuple[int | None, ...]:
        return tuple(int(d) if int(d) >= 0 else None for d in self.engine.get_tensor_shape(INPUT_NAME))

    def output_names(self) -> list[str]:
        return list(self._outputs)
