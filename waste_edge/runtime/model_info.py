"""What a model file is, for `waste-edge info`: its contract-2 metadata, size, sha256 and card, torch-free."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from waste_edge.runtime.formats import format_for_path
from waste_edge.runtime.metadata import ModelMetadata
from waste_edge.runtime.model_path import model_card_path, resolve_model_path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_metadata(path: Path) -> ModelMetadata:
    """Metadata without building an inference session: the ONNX file's metadata_props or the engine sidecar."""
    if format_for_path(path).name == "engine":
        sidecar = json.loads(Path(str(path) + ".json").read_text())
        return ModelMetadata.from_json(sidecar["metadata"])
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return ModelMetadata.from_props(sess.get_modelmeta().custom_metadata_map)


def describe_model(model: str | Path | None = None) -> dict[str, Any]:
    """Everything a user should know before trusting a model: what it classifies, how it preprocesses, what it
    was measured to do (from its card, when one ships beside it), its size and checksum."""
    path = resolve_model_path(model)
    meta = read_metadata(path)
    card_file = model_card_path(path)
    card = json.loads(card_file.read_text()) if card_file.is_file() and card_file != path else None
    return {
        "path": str(path),
        "size_mb": round(path.stat().st_size / 1e6, 3),
        "sha256": _sha256(path),
        "metadata": meta.to_json(),
        "card": card,
    }


def format_description(info: dict[str, Any]) -> str:
    meta, card = info["metadata"], info.get("card") or {}
    pre = meta["preprocess"]
    lines = [
        f"model      : {info['path']}",
        f"size       : {info['size_mb']:.2f} MB, sha256 {info['sha256']}",
        f"encoder    : {meta['encoder']} ({meta['variant']}, {meta['model_kind']})",
        f"classes    : " + ", ".join(f"{c} = {d}" for c, d in zip(meta["classes"], meta["display_names"])),
        f"input      : uint8 NHWC {meta['channel_order']}, "
        + (f"{meta['input_size'][0]}x{meta['input_size'][1]}" if meta.get("input_size") else "any size"),
        f"preprocess : {pre.get('resize_mode')} -> {pre.get('size')}x{pre.get('size')} {pre.get('interpolation')}, "
        f"mean {[round(m, 4) for m in pre.get('mean', [])]}, std {[round(s, 4) for s in pre.get('std', [])]}",
        f"head sha256: {meta['head_sha256']}",
    ]
    emb = meta.get("embedding")
    if emb:
        lines.append(f"embedding  : output {emb['output']!r}, {emb['dim']}-d, normalisation {emb['normalization']} (`waste-edge adapt` can refit the head)")
    ada = meta.get("adaptation")
    if ada:
        counts = ", ".join(f"{c} {n}" for c, n in ada.get("labels_per_class", {}).items())
        lines.append(f"adapted    : {ada.get('time')} from {ada.get('base_model')} (sha256 {str(ada.get('base_model_sha256'))[:12]}...) "
                     f"with {counts} labels, method {ada.get('method')}" + (f"; {len(ada['previous'])} earlier adaptation(s)" if ada.get("previous") else ""))
    for name, m in (card.get("metrics") or {}).items():
        if isinstance(m, dict) and "accuracy" in m:
            extra = ", ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float) and k != "accuracy")
            lines.append(f"metrics    : {name}: accuracy {m['accuracy']:.4f}" + (f", {extra}" if extra else "") + (f" (n={m['n']})" if "n" in m else ""))
    if card.get("data"):
        lines.append(f"trained on : {card['data'].get('description', card['data'].get('source', ''))}")
    if card.get("encoder_weights"):
        lines.append(f"weights    : {card['encoder_weights'].get('source')} sha256 {card['encoder_weights'].get('sha256')}")
    return "\n".join(lines)
