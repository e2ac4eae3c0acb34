"""The one table of model formats (Ultralytics-style) that drives export options, loading and benchmarking.

Export validates its options against `args`, dispatches on `name`; the runtime picks a loader from the
file suffix and a backend order from `backends`; the benchmark enumerates (format, backend) pairs from
here. Adding a format means adding a row, not editing four modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from waste_edge.errors import WasteEdgeError


@dataclass(frozen=True)
class ModelFormat:
    name: str  # the --format value
    suffix: str  # file suffix of the exported artefact
    args: frozenset[str]  # export options this format accepts
    cpu: bool  # runs on CPU
    gpu: bool  # runs on a GPU
    backends: tuple[str, ...]  # runtime backends able to load it, best first (auto picks the first available)


_COMMON = {"out", "batch", "dynamic", "imgsz", "half", "int8", "calib", "channel_order"}

FORMATS: tuple[ModelFormat, ...] = (
    ModelFormat("onnx", ".onnx", frozenset(_COMMON | {"opset", "int8_scheme", "with_embedding", "rehearsal"}), cpu=True, gpu=True, backends=("tensorrt", "cuda", "cpu")),
    ModelFormat("engine", ".engine", frozenset(_COMMON | {"workspace"}), cpu=False, gpu=True, backends=("tensorrt",)),
)


class FormatError(WasteEdgeError, ValueError):
    """An unknown format, or an option the chosen format does not support."""


def get_format(name: str) -> ModelFormat:
    for f in FORMATS:
        if f.name == name.lower():
            return f
    raise FormatError(f"unknown format {name!r}: choose one of {', '.join(f.name for f in FORMATS)}")


def format_for_path(path: str | Path) -> ModelFormat:
    suffix = Path(path).suffix.lower()
    for f in FORMATS:
        if f.suffix == suffix:
            return f
    raise FormatError(f"{path}: unknown model file type {suffix!r} (expected {', '.join(f.suffix for f in FORMATS)})")


def check_args(fmt: ModelFormat, given: set[str]) -> None:
    """Reject options the format does not support, naming them, instead of silently ignoring them."""
    bad = sorted(given - fmt.args)
    if bad:
        opts = ", ".join("--" + b.replace("_", "-") for b in bad)
        raise FormatError(f"format {fmt.name!r} does not support {opts}")
