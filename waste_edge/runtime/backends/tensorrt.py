"""Native TensorRT backend for `.engine` files: Polygraphy's `TrtRunner` behind our sidecar check.

A serialised engine runs only on the TensorRT version and GPU architecture that built it, so the engine is
deserialised only after its sidecar matches this machine (`engine_sidecar.validate_sidecar`); Polygraphy has no
such guard. Everything else (deserialisation, device buffers, the stream, copies) is Polygraphy's
`EngineFromPath` + `TrtRunner`, whose CUDA wrapper (ctypes over libcudart) also answers the device count and
compute capability, so no CUDA bindings are needed beyond TensorRT and Polygraphy (the `[tensorrt]` extra).

`tensorrt` and `polygraphy` are imported inside functions only: this module imports on any machine, and its
tests skip without a GPU. `tensorrt_available` and `compute_capability` are the public CUDA helpers the engine
build (export) uses too.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from waste_edge.runtime.backends.base import BackendError, Runner, TensorInfo
from waste_edge.runtime.backends.engine_sidecar import read_sidecar, validate_sidecar
from waste_edge.runtime.metadata import ModelMetadata

# cudaDeviceAttr values of the CUDA runtime API (stable since CUDA 5).
_CUDA_ATTR_CC_MAJOR, _CUDA_ATTR_CC_MINOR = 75, 76


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
        super().__init__(Path(path).name)
        self.path = Path(path)
        self.device = device
        self.provider = "TensorRT (native engine, Polygraphy TrtRunner)"
        self.metadata: ModelMetadata | None = None
        self._runner: Any = None

    def activate_impl(self) -> None:
        if not tensorrt_available():
            raise BackendError(f"{self.path.name}: the TensorRT backend needs tensorrt, polygraphy and a CUDA GPU (pip install 'waste-edge[tensorrt]')")
        import tensorrt as trt
        from polygraphy.backend.trt import EngineFromPath, TrtRunner

        cudart = _cudart()  # TrtRunner allocates on the current device: make it the one the sidecar is checked for
        cudart.check(cudart.handle.cudaSetDevice(ctypes.c_int(self.device)))
        self.metadata = validate_sidecar(
            read_sidecar(self.path),
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
        self._inputs = {
            n: TensorInfo(
                n,
                np.dtype(trt.nptype(engine.get_tensor_dtype(n))),
                tuple(int(d) if int(d) >= 0 else None for d in engine.get_tensor_shape(n)),
            )
            for n in names
            if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
        }

    def infer_impl(self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None) -> dict[str, np.ndarray]:
        result = self._runner.infer({k: np.ascontiguousarray(v) for k, v in feed.items()})
        names = list(outputs) if outputs is not None else self._outputs
        # TrtRunner reuses its host output buffers on the next call: copy what we hand out.
        return {n: np.array(result[n]) for n in names}

    def deactivate_impl(self) -> None:
        if self._runner is not None and self._runner.is_active:
            self._runner.deactivate()
        self._runner = None

    def custom_metadata(self) -> dict[str, str]:
        assert self.metadata is not None
        return self.metadata.to_props()

    def input_info(self) -> dict[str, TensorInfo]:
        return dict(self._inputs)

    def output_names(self) -> list[str]:
        return list(self._outputs)
