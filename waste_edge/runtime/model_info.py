"""What a model file is, for `waste-edge info`: its contract-2 metadata, size, sha256 and card, torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from waste_edge._io import JsonFileError, file_sha256, read_json
from waste_edge.runtime.backends.engine_sidecar import read_sidecar, sidecar_metadata
from waste_edge.runtime.backends.onnxrt import read_model_props
from waste_edge.runtime.cpu import cpu_info
from waste_edge.runtime.formats import format_for_path
from waste_edge.runtime.metadata import MetadataError, ModelMetadata
from waste_edge.runtime.model_path import model_card_path, resolve_model_path


def read_metadata(path: str | Path) -> ModelMetadata:
    """Metadata without loading the model: the ONNX file's metadata_props or the engine's sidecar."""
    if format_for_path(path).name == "engine":
        return sidecar_metadata(read_sidecar(path), Path(path).name)
    return ModelMetadata.from_props(read_model_props(path))


def describe_model(model: str | Path | None = None) -> dict[str, Any]:
    """Everything a user should know before trusting a model: what it classifies, how it preprocesses, what it
    was measured to do (from its card, when one ships beside it), its size and checksum."""
    path = resolve_model_path(model)
    meta = read_metadata(path)
    card_file = model_card_path(path)
    try:
        card = read_json(card_file) if card_file.is_file() and card_file != path else None
    except JsonFileError as e:
        raise MetadataError(f"model card beside the model: {e}") from None
    if card is not None and not isinstance(card, dict):
        raise MetadataError(f"model card beside the model: {card_file}: must be a JSON object, got {type(card).__name__}")
    return {
        "path": str(path),
        "size_mb": round(path.stat().st_size / 1e6, 3),
        "sha256": file_sha256(path),
        "metadata": meta.to_json(),
        "card": card,
    }


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _rounded(values: Any) -> list[Any]:
    """A card is user input: print what numbers it has, never fail on what it has instead."""
    return [round(v, 4) if _is_number(v) else v for v in values] if isinstance(values, list) else []


def _int8_exactness(extra: dict[str, Any]) -> str:
    """Which CPUs compute this INT8 model's integers exactly, from what the export proved (the same on every machine:
    `info` on a board prints the card as on the host; what this CPU uses is a line of its own)."""
    exact = extra.get("int8_exact_on_every_cpu")
    if exact is True:
        worst = extra.get("int8_worst_pair_sum")
        return ("every CPU: no u8 x s8 pair sum of its weights can pass 32767" + (f" (worst {worst})" if worst else "")
                + ", so x86 without VNNI (AVX2, AVX-512) computes the same integers as VNNI, AMX and Arm")
    if exact is False:
        return "CPUs that accumulate in int32 only (VNNI, AMX, Arm): on x86 without VNNI its u8 x s8 pair sums can saturate"
    return "not recorded in this model (exported before the check)"


def model_summary(info: dict[str, Any]) -> str:
    """The human summary `waste-edge info` prints for `describe_model`'s answer."""
    meta, card = info["metadata"], info.get("card") or {}
    pre = meta["preprocess"]
    lines = [
        f"model      : {info['path']}",
        f"size       : {info['size_mb']:.2f} MB, sha256 {info['sha256']}",
        f"encoder    : {meta['encoder']} ({meta['variant']}, {meta['model_kind']})",
        "classes    : " + ", ".join(f"{c} = {d}" for c, d in zip(meta["classes"], meta["display_names"])),
        f"input      : uint8 NHWC {meta['channel_order']}, "
        + (f"{meta['input_size'][0]}x{meta['input_size'][1]}" if meta.get("input_size") else "any size"),
        f"preprocess : {pre.get('resize_mode')} -> {pre.get('size')}x{pre.get('size')} {pre.get('interpolation')}, "
        f"mean {_rounded(pre.get('mean'))}, std {_rounded(pre.get('std'))}",
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
    extra = meta.get("extra") or {}
    if extra.get("int8_scheme"):  # README "INT8 that gives the same answers on every CPU"
        recipe = f" ({extra['int8_recipe']})" if extra.get("int8_recipe") else ""
        lines.append(f"int8       : {extra.get('int8_method', '')} quantisation, scheme {extra['int8_scheme']}{recipe}, "
                     f"largest GEMM weight {extra.get('int8_weight_peak')}")
        lines.append(f"exact on   : {_int8_exactness(extra)}")
        here = cpu_info()
        lines.append(f"this cpu   : {here.model}, {here.int8_gemm}")
    metrics = card.get("metrics")
    for name, m in (metrics.items() if isinstance(metrics, dict) else ()):
        if isinstance(m, dict) and _is_number(m.get("accuracy")):
            extra = ", ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float) and k != "accuracy")
            lines.append(f"metrics    : {name}: accuracy {m['accuracy']:.4f}" + (f", {extra}" if extra else "") + (f" (n={m['n']})" if "n" in m else ""))
    if isinstance(card.get("data"), dict):
        lines.append(f"trained on : {card['data'].get('description', card['data'].get('source', ''))}")
    if isinstance(card.get("encoder_weights"), dict):
        lines.append(f"weights    : {card['encoder_weights'].get('source')} sha256 {card['encoder_weights'].get('sha256')}")
    return "\n".join(lines)
