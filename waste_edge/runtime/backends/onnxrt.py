"""The ONE ONNX Runtime session loader, and the runner built on it (the cpu, cuda and tensorrt-EP backends).

Every session in waste-edge is built by `load_session`: the runtime's runner, parity, the INT8 calibration
reader, the benchmark's profiler, the Keras export self-check. So the settings that decide whether a model
loads, how fast it runs and whether it crashes live in one place:

- providers (and their options), intra-op threads, one inter-op thread (the fused graph is one chain, its
  parallelism lives inside the ops), sequential execution, the graph optimisation level;
- optimizers that must stay off: ONNX Runtime's CPU `NchwcTransformer` segfaults while optimising a fused fp16
  graph (ORT 1.32, a ViT-B/32 `export --half`), so a model whose metadata says `variant fp16` is loaded
  without it. The variant is read from the file's `metadata_props` *before* the session exists
  (`read_model_props`): the crash happens inside session creation, too late to ask the session;
- per-op profiling and session-config entries (the benchmark's levers);
- a model given as a path or as serialised bytes (parity exposes stage outputs in an in-memory copy);
- one error type, `OrtLoadError`, whose message is one line naming the model, for any load failure.

onnxruntime is imported inside functions, so importing this module costs nothing.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import IO, Any, Mapping, Sequence

import numpy as np

from waste_edge.runtime.backends.base import BackendError, Runner, TensorInfo
from waste_edge.runtime.metadata import PREFIX

log = logging.getLogger(__name__)

ModelSource = str | Path | bytes
CPU = "CPUExecutionProvider"
OPTIMIZATION_LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
# Optimizers that must stay off for a model variant (see the module docstring).
DISABLED_FOR_VARIANT: dict[str, tuple[str, ...]] = {"fp16": ("NchwcTransformer",)}
# ONNX tensor element types as ONNX Runtime names them -> numpy.
_ORT_DTYPES = {
    "float": np.float32, "float16": np.float16, "double": np.float64, "uint8": np.uint8, "int8": np.int8,
    "uint16": np.uint16, "int16": np.int16, "int32": np.int32, "int64": np.int64, "uint32": np.uint32,
    "uint64": np.uint64, "bool": np.bool_, "string": np.object_,
}


class OrtLoadError(BackendError):
    """ONNX Runtime could not load a model (missing file, not ONNX, unsupported operator, bad options)."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _label(model: ModelSource, name: str | None) -> str:
    if name:
        return name
    return "in-memory model" if isinstance(model, (bytes, bytearray)) else Path(model).name


# -- metadata without a session ----------------------------------------------------------------------------


def _varint(fh: IO[bytes]) -> int | None:
    """One protobuf varint, or None at a clean end of input."""
    result = shift = 0
    while True:
        b = fh.read(1)
        if not b:
            if shift:
                raise ValueError("truncated varint")
            return None
        result |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def _fields(fh: IO[bytes], size: int, wanted: int) -> list[bytes]:
    """The payloads of length-delimited field `wanted` of one protobuf message; other fields are seeked over."""
    found = []
    while (tag := _varint(fh)) is not None:
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise ValueError("field number 0")
        if wire == 0:
            _varint(fh)
            continue
        skip = {1: 8, 5: 4}.get(wire)
        if skip is None:
            if wire != 2:
                raise ValueError(f"wire type {wire}")
            skip = _varint(fh) or 0
            if field == wanted:
                payload = fh.read(skip)
                if len(payload) != skip:
                    raise ValueError("truncated field")
                found.append(payload)
                continue
        if fh.seek(skip, io.SEEK_CUR) > size:
            raise ValueError("field runs past the end")
    return found


def read_model_props(model: ModelSource) -> dict[str, str]:
    """`metadata_props` of an ONNX file (or serialised bytes) without building a session or importing onnx.

    ModelProto's field 14 holds them; every other top-level field (the graph with its weights) is seeked
    over, so a 350 MB model costs a handful of reads. The runtime may not import `onnx` (the edge promise)
    and a throw-away session would load every weight. Raises `OrtLoadError` for a file that is not ONNX.
    """
    try:
        if isinstance(model, (bytes, bytearray)):
            fh: IO[bytes] = io.BytesIO(model)
            entries = _fields(fh, len(model), 14)
        else:
            with open(model, "rb") as fh:
                entries = _fields(fh, Path(model).stat().st_size, 14)
        props: dict[str, str] = {}
        for entry in entries:
            keys, values = _fields(io.BytesIO(entry), len(entry), 1), _fields(io.BytesIO(entry), len(entry), 2)
            if keys:
                props[keys[-1].decode("utf-8")] = values[-1].decode("utf-8") if values else ""
        return props
    except OSError as e:
        raise OrtLoadError(f"{_label(model, None)}: cannot read the model: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise OrtLoadError(f"{_label(model, None)}: not an ONNX model ({e})") from None


def optimizers_to_disable(model: ModelSource) -> tuple[str, ...]:
    """The optimizers this model must load without (by its waste-edge variant); none when unreadable."""
    try:
        variant = read_model_props(model).get(PREFIX + "variant", "")
    except OrtLoadError:
        return ()  # let ONNX Runtime itself say what is wrong with the file
    return DISABLED_FOR_VARIANT.get(variant, ())


# -- the loader ------------------------------------------------------------------------------------------


def load_session(
    model: ModelSource,
    *,
    providers: Sequence[str | tuple[str, Mapping[str, Any]]] = (CPU,),
    threads: int | None = None,
    optimization: str = "all",
    disabled_optimizers: Sequence[str] | None = None,
    profile_prefix: str | Path | None = None,
    session_config: Mapping[str, str] | None = None,
    name: str | None = None,
) -> Any:
    """An `onnxruntime.InferenceSession` for `model` (a path or serialised bytes).

    `disabled_optimizers=None` means: what the model's variant needs (`optimizers_to_disable`).
    `profile_prefix` turns on ONNX Runtime's per-op profiler (`session.end_profiling()` returns the file).
    Any failure is an `OrtLoadError` with a one-line message that names the model.
    """
    import onnxruntime as ort

    label = _label(model, name)
    if optimization not in OPTIMIZATION_LEVELS:
        raise OrtLoadError(f"{label}: unknown graph optimisation level {optimization!r} (choose {', '.join(OPTIMIZATION_LEVELS)})")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[optimization])
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1  # the fused graph is one chain: parallelism lives inside ops
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3
    if profile_prefix is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(profile_prefix)
    disabled = list(optimizers_to_disable(model) if disabled_optimizers is None else disabled_optimizers)
    try:
        for key, value in (session_config or {}).items():
            opts.add_session_config_entry(str(key), str(value))
        source = bytes(model) if isinstance(model, (bytes, bytearray)) else str(model)
        return ort.InferenceSession(source, sess_options=opts, providers=list(providers), disabled_optimizers=disabled or None)
    except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, NoSuchFile, InvalidArgument...)
        raise OrtLoadError(f"{label}: cannot load the model with onnxruntime: {_first_line(e)}") from None


def available_providers() -> set[str]:
    import onnxruntime as ort

    return set(ort.get_available_providers())


def tensor_info(node: Any) -> TensorInfo:
    """A session's `NodeArg` as `TensorInfo`: numpy dtype, None for symbolic dimensions."""
    elem = str(node.type)[len("tensor("):-1] if str(node.type).startswith("tensor(") else str(node.type)
    dtype = np.dtype(_ORT_DTYPES.get(elem, np.object_))
    return TensorInfo(node.name, dtype, tuple(d if isinstance(d, int) else None for d in node.shape))


# -- the runner ------------------------------------------------------------------------------------------


class OrtRunner(Runner):
    """An ONNX Runtime session on a fixed provider list: the cpu, cuda and tensorrt (execution provider) backends.

    `providers` come from the backend table (`select.BACKENDS`), best first; the later ones are the fallbacks
    ORT uses for nodes the first cannot run. `needs` completes the message when the first is missing here.
    """

    def __init__(
        self,
        path: str | Path,
        backend: str,
        providers: Sequence[str],
        *,
        needs: str = "",
        threads: int | None = None,
        session_config: Mapping[str, str] | None = None,
        provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(Path(path).name)
        self.path = Path(path)
        self.backend = backend
        self.providers = tuple(providers)
        self.needs = needs
        self.threads = threads
        self.session_config = dict(session_config or {})
        self.provider_options = {k: dict(v) for k, v in (provider_options or {}).items()}
        self.session: Any = None

    def activate_impl(self) -> None:
        wanted = self.providers
        available = available_providers()
        providers = [p for p in wanted if p in available]
        if not providers or providers[0] != wanted[0]:
            raise BackendError(
                f"backend {self.backend!r} needs {wanted[0]}, but this onnxruntime offers {', '.join(sorted(available))}"
                + (f"; it needs {self.needs}" if self.needs else "")
            )
        with_opts = [(p, self.provider_options[p]) if p in self.provider_options else p for p in providers]
        session = load_session(self.path, providers=with_opts, threads=self.threads, session_config=self.session_config)
        chosen = session.get_providers()
        if chosen[0] != wanted[0]:
            # ORT drops a GPU provider it cannot initialise (missing CUDA/cuDNN/TensorRT libraries) and runs on CPU.
            raise BackendError(f"backend {self.backend!r}: onnxruntime could not initialise {wanted[0]} (running on {chosen[0]} instead); check the CUDA / TensorRT installation")
        self.session = session
        self.provider = chosen[0]
        self._inputs = {i.name: tensor_info(i) for i in session.get_inputs()}
        self._outputs = [o.name for o in session.get_outputs()]

    def deactivate_impl(self) -> None:
        self.session = None

    def infer_impl(self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs is not None else self._outputs
        return dict(zip(names, self.session.run(names, feed)))

    def input_info(self) -> dict[str, TensorInfo]:
        return self._inputs

    def output_names(self) -> list[str]:
        return list(self._outputs)

    def custom_metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)
