"""The run directory (DESIGN.md contract 1): what training leaves behind and export / parity read.

`card.json` says which encoder (id, weights source and sha256, preprocessing), which classes, which data
(fingerprint), which metrics and which library versions produced `head.json`; together they are enough to
rebuild the exact reference pipeline and the fused graph without guessing.
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from waste_edge import __version__
from waste_edge.errors import WasteEdgeError
from waste_edge.train.head import LinearHead

CARD_FORMAT = "waste-edge/run-card"
CARD_VERSION = 1
RUN_FILES = ("card.json", "head.json", "metrics.json", "confusion_matrix.png", "roc.png", "report.txt")


class RunError(WasteEdgeError):
    """Not a run directory, or its card and head disagree."""


class CardFields:
    """What every run kind reads the same way from its card.json."""

    card: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.card.get("kind", "linear"))

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])

    @property
    def display_names(self) -> list[str]:
        return list(self.card.get("display_names") or self.card["classes"])


@dataclass
class Run(CardFields):
    path: Path
    card: dict[str, Any]
    head: LinearHead

    @property
    def encoder_id(self) -> str:
        return str(self.card["encoder"]["id"])



def library_versions() -> dict[str, str]:
    out = {"waste_edge": __version__, "python": platform.python_version()}
    for dist in ("torch", "open_clip_torch", "scikit-learn", "numpy", "onnx", "onnxruntime", "pillow"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def write_json(path: Path, doc: Any) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def read_card(run_dir: str | Path) -> dict[str, Any]:
    """card.json of a run directory of any kind, checked for format and version (not for its model files)."""
    path = Path(run_dir)
    card_path = path / "card.json"
    if not card_path.is_file():
        raise RunError(f"{path} is not a run directory (no card.json): train one with `waste-edge train linear` or `train baseline`")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as e:
        raise RunError(f"{card_path}: not valid JSON ({e})") from None
    if card.get("format") != CARD_FORMAT or int(card.get("version", 0)) > CARD_VERSION:
        raise RunError(f"{card_path}: not a waste-edge run card (format {card.get('format')!r}, version {card.get('version')!r})")
    return card


def load_run(run_dir: str | Path) -> Run:
    """Read and cross-check card.json and head.json of a linear run directory."""
    path = Path(run_dir)
    card = read_card(path)
    if card.get("kind", "linear") == "keras":
        raise RunError(f"{path} holds a Keras baseline (kind 'keras'), not a linear head: load it with waste_edge.train.baselines.load_keras_run")
    head = LinearHead.load(path / "head.json")
    if card.get("head", {}).get("sha256") != head.sha256():
        raise RunError(f"{path}: head.json does not match the card's head sha256 (edited after training?)")
    if list(card.get("classes", [])) != head.classes:
        raise RunError(f"{path}: card classes {card.get('classes')} differ from head classes {head.classes}")
    return Run(path, card, head)


def python_info() -> str:
    return f"{platform.python_implementation()} {platform.python_version()} on {sys.platform}"


def make_card(
    encoder_card: dict[str, Any],
    head: LinearHead,
    display_names: list[str],
    *,
    data: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    kind: str = "linear",
) -> dict[str, Any]:
    """Contract 1's card.json content for a trained head on an encoder (`Encoder.card()`)."""
    return {
        "format": CARD_FORMAT,
        "version": CARD_VERSION,
        "kind": kind,
        "created": now_iso(),
        "encoder": encoder_card,
        "preprocess": encoder_card.get("preprocess"),
        "classes": list(head.classes),
        "display_names": list(display_names),
        "head": {"file": "head.json", "sha256": head.sha256(), "l2_normalize": head.l2_normalize, "hyperparameters": head.hyperparameters},
        "data": data or {},
        "metrics": metrics or {},
        "training": training or {},
        "versions": library_versions(),
    }


def save_run(run_dir: str | Path, card: dict[str, Any], head: LinearHead) -> Run:
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    head.save(path / "head.json")
    write_json(path / "card.json", card)
    return Run(path, card, head)
