"""Backend choice: ONE table of backends, from which the CLI's `--backend` / `--backends` choices, the
runners' provider lists and every "it needs ..." message come.

Which backends a model file can use comes from the format table (`formats.format_for_path(path).backends`,
best first); `auto` takes the first one that is really available here and initialises, because ONNX Runtime
silently falls back to CPU when CUDA libraries are missing (the runner reports the provider ORT really chose).
An `.onnx` file runs on an `OrtRunner` with the backend's provider list, an `.engine` file on the native
`TensorRTRunner`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from waste_edge._io import cache_dir as default_cache_dir
from waste_edge.runtime.backends.base import BackendError, Runner
from waste_edge.runtime.backends.onnxrt import OrtRunner, available_providers
from waste_edge.runtime.backends.tensorrt import TensorRTRunner, tensorrt_available
from waste_edge.runtime.formats import format_for_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backend:
    name: str  # the --backend value
    providers: tuple[str, ...]  # ONNX Runtime providers for .onnx files, best first; the later ones are fallbacks
    needs: str  # what an .onnx file needs installed for this backend (for messages)


BACKENDS: tuple[Backend, ...] = (
    Backend("cpu", ("CPUExecutionProvider",), "onnxruntime"),
    Backend("cuda", ("CUDAExecutionProvider", "CPUExecutionProvider"), "onnxruntime-gpu (pip install 'waste-edge[gpu]') and a CUDA GPU"),
    Backend(
        "tensorrt",
        ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
        "onnxruntime-gpu built with the TensorRT execution provider and TensorRT libraries",
    ),
)
BACKEND_NAMES: tuple[str, ...] = tuple(b.name for b in BACKENDS)
BACKEND_CHOICES: tuple[str, ...] = ("auto", *BACKEND_NAMES)
ENGINE_NEEDS = "a CUDA GPU with TensorRT and Polygraphy (pip install 'waste-edge[tensorrt]')"


def get_backend(name: str) -> Backend:
    for b in BACKENDS:
        if b.name == name:
            return b
    raise BackendError(f"unknown backend {name!r}: choose one of {', '.join(BACKEND_CHOICES)}")


def available_backends(path: str | Path) -> list[str]:
    """Backends able to run the file at `path` on this machine, best first (the order of the format table)."""
    fmt = format_for_path(path)
    if fmt.name == "engine":
        return ["tensorrt"] if tensorrt_available() else []
    here = available_providers()
    return [b for b in fmt.backends if get_backend(b).providers[0] in here]


def candidate_backends(path: str | Path, backend: str = "auto") -> list[str]:
    """The backends to try for `backend` (auto: every available one, best first); explains a refusal."""
    if backend != "auto":
        get_backend(backend)
    fmt = format_for_path(path)
    if backend != "auto" and backend not in fmt.backends:
        raise BackendError(f"{Path(path).name}: a {fmt.suffix} file runs on {', '.join(fmt.backends)}, not on {backend!r}")
    here = available_backends(path)
    if backend == "auto":
        if not here:
            need = ENGINE_NEEDS if fmt.name == "engine" else "onnxruntime"
            raise BackendError(f"{Path(path).name}: no backend can run a {fmt.suffix} file here; it needs {need}")
        return here
    if backend not in here:
        hint = ENGINE_NEEDS if fmt.name == "engine" else get_backend(backend).needs
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
    if format_for_path(path).name == "engine":
        return TensorRTRunner(path)
    b = get_backend(backend)
    provider_options: dict[str, dict[str, Any]] = {}
    if b.name == "tensorrt":
        # Building a TensorRT engine takes minutes; the cache makes it a one-time cost per model and GPU.
        cache = Path(cache_dir) if cache_dir else default_cache_dir("trt")
        cache.mkdir(parents=True, exist_ok=True)
        provider_options["TensorrtExecutionProvider"] = {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache)}
    return OrtRunner(path, b.name, b.providers, needs=b.needs, threads=threads, session_config=session_config, provider_options=provider_options)


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


@dataclass(frozen=True)
class BackendCheck:
    """Whether one backend can run a model file here: `ok`, `skipped` (the format cannot use it at all) or
    `failed` (it could, but is missing here), with the reason."""

    backend: str
    status: str
    reason: str = ""


def check_backends(path: str | Path, wanted: Sequence[str] | None = None) -> list[BackendCheck]:
    """Each backend of `wanted` (None: every one available here for this file, best first) with whether it can
    run `path` on this machine, and why not; the benchmark's rows come from this, so it never guesses.
    Raises `FormatError` for a file type no format knows."""
    fmt = format_for_path(path)
    here = available_backends(path)
    if wanted is None:
        if here:
            return [BackendCheck(b, "ok") for b in here]
        try:
            candidate_backends(path, "auto")
            reason = "no backend available"
        except BackendError as e:
            reason = str(e)
        return [BackendCheck("auto", "failed", reason)]
    out = []
    for b in wanted:
        if b not in fmt.backends:
            out.append(BackendCheck(b, "skipped", f"a {fmt.suffix} file runs on {', '.join(fmt.backends)}, not on {b}"))
        elif b not in here:
            try:
                candidate_backends(path, b)
                out.append(BackendCheck(b, "ok"))  # listed as unavailable, yet it says it can: let the loader decide
            except BackendError as e:
                out.append(BackendCheck(b, "failed", str(e)))
        else:
            out.append(BackendCheck(b, "ok"))
    return out
