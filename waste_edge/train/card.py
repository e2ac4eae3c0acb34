"""card.json (ARCHITECTURE.md, contract 1): one writer for every run kind, one reader that checks every field it returns.

A card says which encoder (id, weights source and sha256, preprocessing), which classes, which data
(fingerprint), which metrics and which library versions produced the run; together with the kind's model
file (head.json, model.keras, ...) it is enough to rebuild the reference pipeline and the fused graph
without guessing. Cards are user-editable JSON, so a reader never trusts a field it has not checked: a wrong
type, a non-finite number or a missing key is a `RunError` naming the file and the field, on one line.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from waste_edge._io import JsonFileError, library_versions, modern_keys, read_json, write_json
from waste_edge.errors import WasteEdgeError

CARD_FORMAT = "waste-edge/run-card"
CARD_VERSION = 1
CARD_FILE = "card.json"
REPORT_FILES = ("metrics.json", "confusion_matrix.png", "roc.png", "report.txt")
# Distributions whose versions every card records (a kind adds its own, e.g. tensorflow).
CARD_LIBRARIES = ("torch", "open_clip_torch", "scikit-learn", "numpy", "onnx", "onnxruntime", "pillow")


class RunError(WasteEdgeError):
    """Not a run directory, or its card and model files disagree or fail validation."""


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def data_fingerprint(samples: Sequence[Any], hashes: Sequence[str]) -> str:
    """Content-based: the same files with the same labels and splits give the same fingerprint wherever they live."""
    rows = sorted(f"{s.split}\t{s.label}\t{h}" for s, h in zip(samples, hashes))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def make_card(
    kind: str,
    *,
    encoder: Mapping[str, Any],
    preprocess: Mapping[str, Any],
    classes: Sequence[str],
    display_names: Sequence[str],
    data: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    libraries: Sequence[str] = CARD_LIBRARIES,
    **model: Any,
) -> dict[str, Any]:
    """The card of a run of any kind; `model` holds the kind's own entries (a linear head, a Keras file, ...)."""
    return {
        "format": CARD_FORMAT,
        "version": CARD_VERSION,
        "kind": kind,
        "created": now_iso(),
        "encoder": dict(encoder),
        "preprocess": dict(preprocess),
        "classes": list(classes),
        "display_names": list(display_names),
        **model,
        "data": dict(data or {}),
        "metrics": dict(metrics or {}),
        "training": dict(training or {}),
        "versions": library_versions(libraries),
    }


def write_card(run_dir: str | Path, card: Mapping[str, Any]) -> Path:
    return write_json(Path(run_dir) / CARD_FILE, dict(card))


def read_card(run_dir: str | Path) -> dict[str, Any]:
    """card.json of a run directory, checked for format and version (the run kind checks the rest)."""
    path = Path(run_dir)
    card_path = path / CARD_FILE
    if not card_path.is_file():
        raise RunError(f"{path} is not a run directory (no card.json): train one with `waste-edge train linear` or `train baseline`")
    try:
        card = read_json(card_path)
    except JsonFileError as e:
        raise RunError(str(e)) from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise RunError(f"{card_path}: not a waste-edge run card (format {card.get('format') if isinstance(card, dict) else None!r})")
    version = card.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= CARD_VERSION:
        raise RunError(f"{card_path}: card version {version!r} is not one this toolkit reads (1..{CARD_VERSION}): upgrade waste-edge")
    if isinstance(card.get("preprocess"), dict):
        card["preprocess"] = modern_keys(card["preprocess"])  # cards written with the old `normalisation` spelling
    return card


# -- checked field access ----------------------------------------------------------------------------------

_MISSING = object()
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "an object", list: "a list", type(None): "null"}


class CardFields:
    """Typed reads of a JSON document with errors that name the file and the dotted field."""

    def __init__(self, doc: Mapping[str, Any], where: str | Path) -> None:
        self.doc = doc
        self.where = str(where)

    def error(self, field: str, why: str) -> RunError:
        return RunError(f"{self.where}: field {field!r} {why}")

    def get(self, field: str, *types: type, default: Any = _MISSING) -> Any:
        """The value at `field` ('a.b.c'), which must be one of `types` (bool is never an int or a number)."""
        cur: Any = self.doc
        for part in field.split("."):
            if not isinstance(cur, Mapping) or part not in cur:
                if default is not _MISSING:
                    return default
                raise self.error(field, "is missing")
            cur = cur[part]
        ok = any(isinstance(cur, t) and not (isinstance(cur, bool) and t in (int, float)) for t in types)
        if float in types and isinstance(cur, int) and not isinstance(cur, bool):
            ok = True
        if not ok:
            want = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
            raise self.error(field, f"must be {want}, got {json.dumps(cur)[:60]}")
        if isinstance(cur, float) and not math.isfinite(cur):
            raise self.error(field, f"must be a finite number, got {cur}")
        return cur

    def positive_int(self, field: str) -> int:
        value = self.get(field, int)
        if value < 1:
            raise self.error(field, f"must be a positive integer, got {value}")
        return int(value)

    def sha256(self, field: str, *, optional: bool = False) -> str | None:
        value = self.get(field, str, type(None)) if optional else self.get(field, str)
        if value is not None and (len(value) != 64 or any(c not in "0123456789abcdef" for c in value)):
            raise self.error(field, f"must be a hex sha256 (64 characters), got {value[:70]!r}")
        return value

    def names(self, field: str, *, distinct: bool = True, at_least: int = 2) -> list[str]:
        value = self.get(field, list)
        if len(value) < at_least or not all(isinstance(v, str) and v for v in value):
            raise self.error(field, f"must be a list of at least {at_least} non-empty names, got {json.dumps(value)[:60]}")
        if distinct and len(set(value)) != len(value):
            raise self.error(field, f"must name distinct classes, got {value}")
        return list(value)

    def finite_numbers(self, field: str) -> None:
        """Every number anywhere under `field` is finite (metrics that say NaN are a broken run)."""

        def walk(value: Any, at: str) -> None:
            if isinstance(value, float) and not math.isfinite(value):
                raise self.error(at, f"must be a finite number, got {value}")
            if isinstance(value, Mapping):
                for k, v in value.items():
                    walk(v, f"{at}.{k}")
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    walk(v, f"{at}[{i}]")

        walk(self.get(field, dict, default={}), field)
