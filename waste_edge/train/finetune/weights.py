"""Fine-tuning's files, all safetensors + JSON (never pickles): the encoder weights a run ships, and the
checkpoint an interrupted run resumes from.

- `encoder.safetensors`: the EfficientNet-Lite0 state dict without the unused ImageNet classifier; its metadata
  names the format, the preprocessing the weights were trained with and where they came from, so the encoder
  registry rebuilds the exact encoder from the file alone (`effnet-lite0/encoder.safetensors`).
- `checkpoint/state.safetensors` + `state.json`: model and optimizer tensors after the last finished epoch, and
  the record (epoch, history, best epoch, recipe) that says how to continue. state.json is written last and
  carries the sha256 of the tensors, so a torn pair is detected instead of resumed.
- `checkpoint/best.safetensors`: the weights of the best validation epoch so far.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from waste_edge._io import atomic_write_bytes, write_json
from waste_edge.errors import WasteEdgeError
from waste_edge.train.encoders import CLASSIFIER_PREFIX, WEIGHTS_FORMAT
from waste_edge.train.preprocess import PreprocessSpec

CHECKPOINT_DIR = "checkpoint"
STATE_TENSORS, STATE_RECORD, BEST_TENSORS = "state.safetensors", "state.json", "best.safetensors"


class CheckpointError(WasteEdgeError):
    """A checkpoint that cannot be resumed (missing, torn, or from another recipe)."""


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _tensors(state: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        v = v.detach().contiguous()  # channels_last tensors are not contiguous in safetensors' sense
        out[k] = v.to(dtype) if dtype is not None and v.is_floating_point() else v
    return out


def encoder_weights_bytes(encoder: torch.nn.Module, spec: PreprocessSpec, provenance: dict[str, Any],
                          dtype: torch.dtype | None = None) -> bytes:
    """The encoder's state dict (without `_fc.*`) as safetensors bytes with its metadata; deterministic."""
    from safetensors.torch import save

    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith(CLASSIFIER_PREFIX)}
    # ONE metadata key: safetensors writes its metadata map in hash order, so several keys would make the bytes
    # (and the sha256 a card pins) differ from run to run for the same weights.
    doc = {"encoder": "effnet-lite0", "preprocess": spec.to_dict(), "provenance": provenance}
    return save(_tensors(state, dtype), metadata={WEIGHTS_FORMAT: json.dumps(doc, sort_keys=True)})


def save_encoder_weights(path: str | Path, encoder: torch.nn.Module, spec: PreprocessSpec, provenance: dict[str, Any],
                         dtype: torch.dtype | None = None) -> str:
    """Write `encoder.safetensors` atomically; returns its sha256 (what the card pins)."""
    data = encoder_weights_bytes(encoder, spec, provenance, dtype)
    atomic_write_bytes(path, data)
    return _digest(data)


def weights_metadata(path: str | Path) -> dict[str, Any]:
    """What an encoder weights file says about itself: encoder, preprocess, provenance ({} for foreign files)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    return json.loads(meta[WEIGHTS_FORMAT]) if WEIGHTS_FORMAT in meta else {}


def save_model_tensors(path: Path, model: torch.nn.Module) -> None:
    from safetensors.torch import save

    atomic_write_bytes(path, save(_tensors(model.state_dict())))


def load_model_tensors(path: Path, model: torch.nn.Module) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)), strict=True)


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, record: dict[str, Any]) -> None:
    """Model + optimizer tensors, then the record that commits them (with their sha256)."""
    from safetensors.torch import save

    opt = optimizer.state_dict()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for idx, st in opt["state"].items():
        for key, value in st.items():
            tensors[f"optim.{idx}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    data = save(_tensors(tensors))
    atomic_write_bytes(folder / STATE_TENSORS, data)
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in opt["param_groups"]]
    write_json(folder / STATE_RECORD, {**record, "optimizer_param_groups": groups, "state_sha256": _digest(data)})


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model and optimizer from `folder`; returns the record. CheckpointError when it cannot be trusted."""
    from safetensors.torch import load

    record_path, tensor_path = folder / STATE_RECORD, folder / STATE_TENSORS
    if not record_path.is_file() or not tensor_path.is_file():
        raise CheckpointError(f"{folder}: no checkpoint to resume (state.json and state.safetensors)")
    try:
        record = json.loads(record_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{record_path}: not valid JSON ({e})") from None
    data = tensor_path.read_bytes()
    if _digest(data) != record.get("state_sha256"):
        raise CheckpointError(f"{tensor_path} does not match {record_path} (interrupted while saving?): start a new run")
    tensors = load(data)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, key = k.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    optimizer.load_state_dict({"state": state, "param_groups": record["optimizer_param_groups"]})
    return record
