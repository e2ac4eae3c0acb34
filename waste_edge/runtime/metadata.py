"""The metadata contract of a fused model (ARCHITECTURE.md, contract 2), shared by export and runtime.

Export writes it into ONNX `metadata_props` (and, for a TensorRT engine, into a sidecar JSON together with
the TensorRT version and GPU compute capability); the runtime reads it back to know the classes, the
channel order and the input size without importing any training code. Values are strings in ONNX, so
structured fields are JSON-encoded under fixed keys with a common prefix.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from waste_edge._io import modern_keys
from waste_edge.errors import WasteEdgeError

FORMAT_VERSION = 1
PREFIX = "waste_edge."
INPUT_NAME = "image"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_LABEL = "label"
OUTPUT_EMBEDDING = "embedding"  # optional third output: the head's input features (export --with-embedding)
MAX_CLASSES = 1000  # a waste classifier has a handful; a file claiming more is broken or hostile
MAX_INPUT_SIDE = 16384


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class MetadataError(WasteEdgeError, ValueError):
    """A model file without usable waste-edge metadata (not exported by this toolkit, or a newer format)."""


@dataclass
class ModelMetadata:
    classes: list[str]
    display_names: list[str]
    channel_order: str  # "BGR" (OpenCV frames) or "RGB"
    preprocess: dict[str, Any]  # the encoder's PreprocessSpec as a dict
    encoder: str  # encoder id, e.g. "clip:ViT-B-32/openai" or "effnet-lite0"
    head_sha256: str
    toolkit_version: str
    variant: str = "fp32"  # fp32 | int8 | fp16
    input_size: list[int] | None = None  # [H, W] when exported with fixed --imgsz, else None (any size)
    model_kind: str = "linear"  # linear (encoder + logistic head) | keras (study baselines)
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    # {"output": "embedding", "dim": D, "normalization": "none" | "l2"} when the graph also outputs the features
    # its head sees (after the normalisation named here); None otherwise. `adapt` refits the head on them.
    embedding: dict[str, Any] | None = None
    # Provenance of a head refitted by `waste-edge adapt` (base model sha256, labels per class, method, time,
    # earlier adaptations); None for a model straight from `export`.
    adaptation: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        """Validate every field at load time: a model file is user input, and a bad one must fail here in one
        line, not later as a traceback in a CSV writer or an overlay (duplicate classes would write p_B,p_B)."""
        for name in ("channel_order", "encoder", "head_sha256", "toolkit_version", "variant", "model_kind"):
            if not isinstance(getattr(self, name), str):
                raise MetadataError(f"metadata field {name!r} must be a string, got {type(getattr(self, name)).__name__}")
        if self.channel_order not in ("BGR", "RGB"):
            raise MetadataError(f"channel_order must be BGR or RGB, got {self.channel_order!r}")
        for name in ("classes", "display_names"):
            values = getattr(self, name)
            if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() and v.isprintable() for v in values):
                raise MetadataError(f"metadata {name} must be a list of non-empty one-line strings, got {_short(values)}")
        if not 2 <= len(self.classes) <= MAX_CLASSES or len(self.display_names) != len(self.classes):
            raise MetadataError(f"metadata needs 2 to {MAX_CLASSES} classes and one display name per class, got {len(self.classes)} classes")
        dups = sorted({c for c in self.classes if self.classes.count(c) > 1})
        if dups:
            raise MetadataError(f"metadata lists class {', '.join(map(repr, dups))} more than once")
        if not isinstance(self.preprocess, dict) or not isinstance(self.extra, dict):
            raise MetadataError("metadata preprocess and extra must be JSON objects")
        if isinstance(self.format_version, bool) or not isinstance(self.format_version, int):
            raise MetadataError(f"metadata format_version must be an integer, got {_short(self.format_version)}")
        if self.input_size is not None:
            size = self.input_size
            if (not isinstance(size, list) or len(size) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_INPUT_SIDE for v in size)):
                raise MetadataError(f"metadata input_size must be [H, W] with 1 <= H, W <= {MAX_INPUT_SIDE}, got {_short(size)}")

    @property
    def frame_size(self) -> tuple[int, int] | None:
        """(W, H) of the frames a fixed-size model takes (PIL's size order), None when any size goes."""
        return (int(self.input_size[1]), int(self.input_size[0])) if self.input_size else None

    def to_props(self) -> dict[str, str]:
        """Flat string map for `onnx.helper.set_model_props` / `ModelProto.metadata_props`."""
        return {PREFIX + k: v if isinstance(v, str) else json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str]) -> "ModelMetadata":
        """Parse ONNX metadata (`InferenceSession.get_modelmeta().custom_metadata_map`) or a sidecar dict."""
        own = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        if not own:
            raise MetadataError("the model carries no waste-edge metadata: export it with `waste-edge export`")
        try:
            version = json.loads(str(own.get("format_version", "0")))
        except (json.JSONDecodeError, RecursionError):
            version = None
        if isinstance(version, bool) or not isinstance(version, int):
            raise MetadataError(f"malformed waste-edge metadata: format_version {_short(own.get('format_version'))} is not an integer")
        if version > FORMAT_VERSION:
            raise MetadataError(f"model format version {version} is newer than this toolkit ({FORMAT_VERSION}): upgrade waste-edge")
        str_fields = {"channel_order", "encoder", "head_sha256", "toolkit_version", "variant", "model_kind"}
        kwargs: dict[str, Any] = {}
        try:
            for name in cls.__dataclass_fields__:
                if name in own:
                    raw = own[name]
                    kwargs[name] = raw if name in str_fields or not isinstance(raw, str) else json.loads(raw)
            if isinstance(kwargs.get("extra"), dict):
                kwargs["extra"] = modern_keys(kwargs["extra"])  # models exported with the old `normalisation` spelling
            return cls(**kwargs)
        except MetadataError:
            raise
        except (TypeError, ValueError) as e:  # JSONDecodeError is a ValueError
            raise MetadataError(f"malformed waste-edge metadata: {e}") from None
        except RecursionError:
            raise MetadataError("malformed waste-edge metadata: JSON nested too deeply") from None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ModelMetadata":
        return cls.from_props({PREFIX + k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()})
