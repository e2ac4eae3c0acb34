"""The sidecar that makes a TensorRT engine safe to ship (ARCHITECTURE.md, contract 5): `<file>.engine.json`.

A serialised engine only runs on the TensorRT version and GPU architecture that built it; anything else fails
deep inside deserialisation or, worse, runs wrongly. So the build writes the fused model's metadata (contract
2) plus the TensorRT version and compute capability beside the engine, the runtime refuses a mismatch with a
message that says to rebuild, and `info` / `bench` read the metadata from here without touching a GPU.
Pure Python (no tensorrt import): tested on every machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from waste_edge._io import JsonFileError, read_json, write_json
from waste_edge.runtime.backends.base import BackendError
from waste_edge.runtime.metadata import MetadataError, ModelMetadata

REQUIRED_KEYS = ("metadata", "tensorrt_version", "compute_capability")


class EngineMismatchError(BackendError):
    """The engine was built for another TensorRT version or GPU architecture."""


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(str(engine_path) + ".json")


def make_sidecar(metadata: ModelMetadata, tensorrt_version: str, compute_capability: str, **build: Any) -> dict[str, Any]:
    """The sidecar document: what `validate_sidecar` reads back; `build` records how the engine was built."""
    return {
        "metadata": metadata.to_json(),
        "tensorrt_version": str(tensorrt_version),
        "compute_capability": str(compute_capability),
        "build": build,
    }


def write_sidecar(engine_path: str | Path, sidecar: Mapping[str, Any]) -> Path:
    return write_json(sidecar_path(engine_path), dict(sidecar))


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    """The sidecar JSON of an engine, or a `BackendError` saying it is missing or unreadable."""
    side = sidecar_path(engine_path)
    try:
        data = read_json(side)
    except FileNotFoundError:
        raise BackendError(f"{side.name} is missing: a TensorRT engine needs the sidecar written by `waste-edge export --format engine`") from None
    except JsonFileError as e:
        raise BackendError(f"unreadable engine sidecar: {e}") from None
    if not isinstance(data, dict):
        raise BackendError(f"{side}: engine sidecar must be a JSON object")
    return data


def _require_keys(sidecar: Mapping[str, Any], name: str) -> None:
    for key in REQUIRED_KEYS:
        if key not in sidecar:
            raise BackendError(f"{name}: engine sidecar lacks {key!r}; rebuild the engine with `waste-edge export --format engine`")


def sidecar_metadata(sidecar: Mapping[str, Any], name: str = "engine") -> ModelMetadata:
    """The model metadata a sidecar carries (no version check: for `info` and the benchmark's labels)."""
    _require_keys(sidecar, name)
    try:
        return ModelMetadata.from_json(sidecar["metadata"])
    except MetadataError as e:
        raise BackendError(f"{name}: {e}") from None
    except (AttributeError, TypeError) as e:
        raise BackendError(f"{name}: malformed metadata in the engine sidecar: {e}") from None


def validate_sidecar(
    sidecar: Mapping[str, Any],
    *,
    tensorrt_version: str,
    compute_capability: str,
    name: str = "engine",
) -> ModelMetadata:
    """Metadata of an engine whose sidecar matches this machine; `EngineMismatchError` (rebuild it) otherwise."""
    _require_keys(sidecar, name)
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
    return sidecar_metadata(sidecar, name)
