"""Which model file to load: the one place where the embedded default model plugs in.

`--model` omitted means the embedded default model (waste_edge/models/default.onnx, package data); every
verb (camera, predict, bench, info) resolves it here, so there is one default and one error message.
"""

from __future__ import annotations

from pathlib import Path

from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.formats import format_for_path


DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "default.onnx"


def default_model_path() -> Path | None:
    """The embedded default model (EfficientNet-Lite0 INT8 + logistic head, built by
    scripts/build_default_model.py), or None in a checkout where it has not been built."""
    return DEFAULT_MODEL if DEFAULT_MODEL.is_file() else None


def model_card_path(model: str | Path) -> Path:
    """The JSON card shipped beside a model (`default.onnx` -> `default.json`)."""
    return Path(model).with_suffix(".json")


def resolve_model_path(arg: str | Path | None) -> Path:
    """The model to load for `arg` (None: the default model); a `WasteEdgeError` that says what to do otherwise."""
    if arg is None or str(arg) == "":
        default = default_model_path()
        if default is None:
            raise WasteEdgeError(
                "no model given and the default model is missing from this install: pass --model PATH "
                "(an .onnx or .engine file written by `waste-edge export`) or build it with `make default-model`"
            )
        return default
    path = Path(arg).expanduser()
    format_for_path(path)  # unknown suffix -> clear error before any file access
    if not path.exists():
        raise WasteEdgeError(f"{path}: model file not found")
    if not path.is_file():
        raise WasteEdgeError(f"{path}: not a file (expected an .onnx or .engine model)")
    return path
