"""Backends as Polygraphy-style runners: `activate()`, `infer(feed)`, `deactivate()`, usable as a context manager.

One ONNX Runtime runner class serves the cpu, cuda and tensorrt backends of an `.onnx` file (they differ
only in the provider list); a native TensorRT runner (`tensorrt_runner.py`) serves `.engine` files. Which
backends a file can use comes from the format table (`formats.format_for_path(path).backends`, best
first); `auto` takes the first one that is really available here, and the runner reports the provider
that ONNX Runtime actually chose, because ORT silently falls back to CPU when CUDA libraries are missing.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.formats import format_for_path

log = logging.getLogger(__name__)

BACKENDS = ("auto", "cpu", "cuda", "tensorrt")

# ORT provider lists per backend; the later entries are the fallbacks ORT uses for unsupported nodes.
ORT_PROVIDERS: dict[str, tuple[str, ...]] = {
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "cpu": ("CPUExecutionProvider",),
}


class BackendError(WasteEdgeError):
    """The requested backend cannot run here, or the model file cannot be loaded by it."""


class Runner(ABC):
    """A loaded model that maps a feed dict of numpy arrays to a dict of output arrays."""

    backend: str = ""
    provider: str = ""

    def __init__(self) -> None:
        self.is_active = False

    @abstractmethod
    def activate(self) -> None:
        """Load the model and allocate what inference needs (sessions, device buffers)."""

    @abstractmethod
    def deactivate(self) -> None:
        """Release what `activate` allocated; the runner can be activated again."""

    @abstractmethod
    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; outputs by name."""

    @abstractmethod
    def custom_metadata(self) -> dict[str, str]:
        """The model's waste-edge metadata as the flat string map `ModelMetadata.from_props` reads."""

    @abstractmethod
    def input_shape(self) -> tuple[int | None, ...]:
        """Shape of the `image` input; None where a dimension is dynamic."""

    @abstractmethod
    def output_names(self) -> list[str]:
        ...

    def __enter__(self) -> "Runner":
        if not self.is_active:
            self.activate()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.is_active:
            self.deactivate()


class OrtRunner(Runner):
    """ONNX Runtime session with a fixed provider list (cpu, cuda or the TensorRT execution provider)."""

    def __init__(
        self,
        path: str | Path,
        backend: str = "cpu",
        *,
        threads: int | None = None,
        session_config: Mapping[str, str] | None = None,
        provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if backend not in ORT_PROVIDERS:
            raise BackendError(f"unknown ONNX Runtime backend {backend!r}: choose one of {', '.join(ORT_PROVIDERS)}")
        self.path = Path(path)
        self.backend = backend
        self.threads = threads
        self.session_config = dict(session_config or {})
        self.provider_options = {k: dict(v) for k, v in (provider_options or {}).items()}
        self.session: Any = None
        self.provider = ""

    def activate(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1  # the fused graph is one chain: parallelism lives inside ops
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
        opts.log_severity_level = 3
        for key, value in self.session_config.items():
            opts.add_session_config_entry(key, str(value))
        wanted = ORT_PROVIDERS[self.backend]
        available = set(ort.get_available_providers())
        providers = [p for p in wanted if p in available]
        if not providers or providers[0] != wanted[0]:
            raise BackendError(
                f"backend {self.backend!r} needs {wanted[0]}, but this onnxruntime offers {', '.join(sorted(available))}"
                + ("; install onnxruntime-gpu (pip install 'waste-edge[gpu]')" if self.backend != "cpu" else "")
            )
        with_opts = [(p, self.provider_options[p]) if p in self.provider_options else p for p in providers]
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=with_opts)
        except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, NoSuchFile...)
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BackendError(f"{self.path}: cannot load the model with onnxruntime: {msg}") from None
        chosen = self.session.get_providers()
        if chosen[0] != wanted[0]:
            # ORT drops a GPU provider it cannot initialise (missing CUDA/cuDNN/TensorRT libraries) and runs on CPU.
            self.session = None
            raise BackendError(f"backend {self.backend!r}: onnxruntime could not initialise {wanted[0]} (running on {chosen[0]} instead); check the CUDA / TensorRT installation")
        self.provider = chosen[0]
        self._inputs = self.session.get_inputs()
        self._outputs = [o.name for o in self.session.get_outputs()]
        self.is_active = True

    def deactivate(self) -> None:
        self.session = None
        self.is_active = False

    def infer(self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs is not None else self._outputs
        return dict(zip(names, self.session.run(names, feed)))

    def run(self, names: list[str], feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """`infer` without building a dict: the camera loop's hot path."""
        return self.session.run(names, feed)

    def custom_metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def input_shape(self) -> tuple[int | None, ...]:
        return tuple(d if isinstance(d, int) else None for d in self._inputs[0].shape)

    def input_info(self) -> tuple[str, str]:
        """(name, type) of the first input, for contract checks."""
        return self._inputs[0].name, self._inputs[0].type

    def output_names(self) -> list[str]:
        return list(self._outputs)


def ort_available_backends() -> list[str]:
    """ORT backends whose first provider this onnxruntime build offers (cpu is always there)."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    return [b for b, providers in ORT_PROVIDERS.items() if providers[0] in available]


def available_backends(path: str | Path) -> list[str]:
    """Backends able to run the file at `path` on this machine, best first (the order of the format table)."""
    fmt = format_for_path(path)
    if fmt.name == "engine":
        from waste_edge.runtime.tensorrt_runner import tensorrt_available

        return ["tensorrt"] if tensorrt_available() else []
    here = set(ort_available_backends())
    return [b for b in fmt.backends if b in here]


def candidate_backends(path: str | Path, backend: str = "auto") -> list[str]:
    """The backends to try for `backend` (auto: every available one, best first); explains a refusal."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    fmt = format_for_path(path)
    if backend != "auto" and backend not in fmt.backends:
        raise BackendError(f"{Path(path).name}: a {fmt.suffix} file runs on {', '.join(fmt.backends)}, not on {backend!r}")
    here = available_backends(path)
    if backend == "auto":
        if not here:
            need = "a CUDA GPU with TensorRT and Polygraphy (pip install 'waste-edge[tensorrt]')" if fmt.name == "engine" else "onnxruntime"
            raise BackendError(f"{Path(path).name}: no backend can run a {fmt.suffix} file here; it needs {need}")
        return here
    if backend not in here:
        if fmt.name == "engine":
            hint = "TensorRT, Polygraphy and a CUDA GPU (pip install 'waste-edge[tensorrt]')"
        elif backend == "tensorrt":
            hint = "onnxruntime-gpu built with the TensorRT execution provider and TensorRT libraries"
        else:
            hint = "onnxruntime-gpu (pip install 'waste-edge[gpu]') and a CUDA GPU"
        raise BackendError(f"backend {backend!r} is not available here: it needs {hint}; available: {', '.join(here) or 'none'}")
    return [backend]


def make_runner(
    path: str | Path,
    backend: str,
    *,
    threads: int | None = None,
    session_config: Mapping[str, str] | None = None,
    cache_dir: str | Path | None = None,
) -> Runner:
    """An inactive runner for one concrete backend (not `auto`)."""
    fmt = format_for_path(path)
    if fmt.name == "engine":
        from waste_edge.runtime.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(path)
    provider_options: dict[str, dict[str, Any]] = {}
    if backend == "tensorrt":
        # Building a TensorRT engine takes minutes; the cache makes it a one-time cost per model and GPU.
        cache = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "waste-edge" / "trt"
        cache.mkdir(parents=True, exist_ok=True)
        provider_options["TensorrtExecutionProvider"] = {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache)}
    return OrtRunner(path, backend, threads=threads, session_config=session_config, provider_options=provider_options)


def open_runner(
    path: str | Path,
    backend: str = "auto",
    *,
    threads: int | None = None,
    session_config: Mapping[str, str] | None = None,
) -> Runner:
    """An active runner: the requested backend, or with `auto` the best one that really initialises."""
    candidates = candidate_backends(path, backend)
    failures: list[str] = []
    for name in candidates:
        runner = make_runner(path, name, threads=threads, session_config=session_config)
        try:
            runner.activate()
        except BackendError as e:
            if backend != "auto" or name == candidates[-1]:
                if failures:
                    raise BackendError(f"{e} (also tried: {'; '.join(failures)})") from None
                raise
            failures.append(f"{name}: {e}")
            log.warning("backend %s unavailable (%s); trying the next one", name, e)
            continue
        return runner
    raise BackendError(f"no backend could load {path}")  # unreachable: the loop returns or raises
