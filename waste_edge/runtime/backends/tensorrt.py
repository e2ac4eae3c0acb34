"""Native TensorRT backend for `.engine` files (moved from `runtime/tensorrt_runner.py`).

The engine is deserialised only after its sidecar matches this machine (`engine_sidecar.validate_sidecar`):
a serialised engine runs only on the TensorRT version and GPU architecture that built it.

`tensorrt` and the CUDA bindings (cuda-python) are imported inside functions only: this module imports
on any machine, and its tests skip without a GPU. `import_cudart`, `cuda_check`, `tensorrt_available` and
`compute_capability` are the public CUDA helpers the engine build (export) uses too.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from waste_edge.runtime.backends.base import BackendError, Runner, TensorInfo
from waste_edge.runtime.backends.engine_sidecar import read_sidecar, validate_sidecar
from waste_edge.runtime.metadata import ModelMetadata


def import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


def cuda_check(result: Any) -> Any:
    """cuda-python returns (error, *values): raise on an error, return the value(s)."""
    cudart = import_cudart()
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
        cudart = import_cudart()
        return int(cuda_check(cudart.cudaGetDeviceCount())) > 0
    except Exception:  # no driver, no device, broken install: all mean "not here"
        return False


def compute_capability(device: int = 0) -> str:
    cudart = import_cudart()
    props = cuda_check(cudart.cudaGetDeviceProperties(device))
    return f"{props.major}.{props.minor}"


class TensorRTRunner(Runner):
    """Deserialises an engine after the sidecar check; one CUDA stream, device buffers grown on demand."""

    backend = "tensorrt"

    def __init__(self, path: str | Path, device: int = 0) -> None:
        super().__init__(Path(path).name)
        self.path = Path(path)
        self.device = device
        self.provider = "TensorRT (native engine)"
        self.metadata: ModelMetadata | None = None
        self._device_buffers: dict[str, tuple[int, int]] = {}

    def activate_impl(self) -> None:
        if not tensorrt_available():
            raise BackendError(f"{self.path.name}: the TensorRT backend needs tensorrt, cuda-python and a CUDA GPU (pip install 'waste-edge[tensorrt]')")
        import tensorrt as trt

        cudart = import_cudart()
        cuda_check(cudart.cudaSetDevice(self.device))
        self.metadata = validate_sidecar(
            read_sidecar(self.path),
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
        self._stream = cuda_check(cudart.cudaStreamCreate())

    def _device_buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._device_buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                cuda_check(self._cudart.cudaFree(ptr))
            ptr = int(cuda_check(self._cudart.cudaMalloc(max(nbytes, 1))))
            self._device_buffers[name] = (ptr, nbytes)
        return ptr

    def infer_impl(self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None) -> dict[str, np.ndarray]:
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
            cuda_check(cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d, stream))
            self.context.set_tensor_address(name, ptr)
        host: dict[str, np.ndarray] = {}
        for name in self._outputs:
            out = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=self._dtypes[name])
            self.context.set_tensor_address(name, self._device_buffer(name, out.nbytes))
            host[name] = out
        if not self.context.execute_async_v3(int(stream)):
            raise BackendError(f"{self.path.name}: TensorRT execution failed")
        for name, out in host.items():
            cuda_check(cudart.cudaMemcpyAsync(out.ctypes.data, self._device_buffers[name][0], out.nbytes, d2h, stream))
        cuda_check(cudart.cudaStreamSynchronize(stream))
        del staged
        if outputs is not None:
            return {n: host[n] for n in outputs}
        return host

    def deactivate_impl(self) -> None:
        for ptr, _ in self._device_buffers.values():
            self._cudart.cudaFree(ptr)
        self._device_buffers.clear()
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self.context = None
        self.engine = None

    def custom_metadata(self) -> dict[str, str]:
        assert self.metadata is not None
        return self.metadata.to_props()

    def input_info(self) -> dict[str, TensorInfo]:
        return {
            n: TensorInfo(n, self._dtypes[n], tuple(int(d) if int(d) >= 0 else None for d in self.engine.get_tensor_shape(n)))
            for n in self._inputs
        }

    def output_names(self) -> list[str]:
        return list(self._outputs)
