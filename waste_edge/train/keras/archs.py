"""The baselines' architectures as ONE table, and the Keras models built from a row of it.

A row says everything that differs between architectures: default and smallest input side, the no-top
ImageNet weights file Keras downloads, the `keras.applications` factory and its `preprocess_input`, and where
the model normalises its input (recorded in the card). Adding an architecture is adding a row.

Choices that matter:
- Geometry is the toolkit's `box_crop` spec (centre square, integer box reduce, bilinear to `imgsz`), the one
  the edge encoders use: the fused graph reproduces it to the grey level, so the exported model sees what the
  Keras model was trained and evaluated on. Everything after the uint8 crop (scaling, the applications'
  `preprocess_input`) lives INSIDE the Keras model, whose input is float RGB 0..255.
- ImageNet backbones train the head on a frozen backbone (BatchNorm kept in inference mode), then, with
  `fine_tune_from`, unfreeze from that layer on at a low learning rate. With `weights="none"` there is nothing
  to transfer, so the whole network trains from the start with live BatchNorm statistics.
TensorFlow is the optional `[baselines]` extra, imported only inside functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from waste_edge._io import file_sha256, tcp_unreachable
from waste_edge.errors import WasteEdgeError
from waste_edge.train.preprocess import PreprocessSpec

KIND = "keras"
MODEL_FILE = "model.keras"
WEIGHTS_HOST = "storage.googleapis.com"  # where keras.applications downloads ImageNet weights from
LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx")  # recorded in the card besides the common ones


class BaselineError(WasteEdgeError):
    """A Keras baseline cannot be built, trained or loaded (bad option, missing weights, no TensorFlow)."""


@dataclass(frozen=True)
class Arch:
    name: str  # the --arch value
    default_imgsz: int
    min_imgsz: int
    normalization: str  # where the model normalises its 0..255 input (recorded in the card)
    imagenet_file: str | None = None  # the no-top weights file; None: no pretrained weights exist (the small CNN)
    application: str | None = None  # keras.applications factory, e.g. "VGG16"
    preprocess_module: str | None = None  # keras.applications.<module>.preprocess_input; None: inside the backbone


ARCHS: tuple[Arch, ...] = (
    Arch("cnn", 128, 16, "inside the model: Rescaling(1/255)"),
    Arch("vgg16", 224, 32, "inside the model: keras.applications.vgg16.preprocess_input (RGB->BGR, ImageNet mean subtracted)",
         "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "VGG16", "vgg16"),
    Arch("efficientnetb0", 224, 32, "inside the model: EfficientNetB0's own Rescaling + Normalization layers",
         "efficientnetb0_notop.h5", "EfficientNetB0"),
    Arch("inceptionv3", 299, 75, "inside the model: keras.applications.inception_v3.preprocess_input (x/127.5 - 1)",
         "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", "InceptionV3", "inception_v3"),
)
ARCH_NAMES: tuple[str, ...] = tuple(a.name for a in ARCHS)


def get_arch(name: str) -> Arch:
    for a in ARCHS:
        if a.name == name:
            return a
    raise BaselineError(f"unknown architecture {name!r}: choose one of {', '.join(ARCH_NAMES)}")


def check_arch(name: str, imgsz: int) -> Arch:
    arch = get_arch(name)
    if imgsz < arch.min_imgsz:
        raise BaselineError(f"{name} needs --imgsz >= {arch.min_imgsz}, got {imgsz}")
    return arch


def preprocess_spec(imgsz: int) -> PreprocessSpec:
    """Geometry of every baseline; mean 0 / std 1 because normalisation is part of the Keras model itself."""
    return PreprocessSpec(size=int(imgsz), resize_mode="box_crop", interpolation="bilinear", antialias=True,
                          mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def preprocess_card(arch: str, imgsz: int) -> dict[str, Any]:
    return preprocess_spec(imgsz).to_dict() | {"model_input": "float32 NHWC RGB 0..255", "normalization": get_arch(arch).normalization}


# -- TensorFlow, lazily ------------------------------------------------------------------------------------


def import_tensorflow(threads: int | None = 2) -> tuple[Any, Any]:
    """(tensorflow, keras) with quiet logs and bounded threads; a clear error when the extra is missing.

    Thread counts can only be set before TensorFlow's runtime starts; later calls keep the first setting.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        import tensorflow as tf
        import keras
    except ImportError as e:
        raise BaselineError(f"TensorFlow is not installed ({e.name or e}): pip install 'waste-edge[baselines]'") from None
    if keras.backend.backend() != "tensorflow":
        raise BaselineError(f"Keras runs on the {keras.backend.backend()!r} backend: set KERAS_BACKEND=tensorflow for baselines")
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # the runtime is already initialised in this process
    return tf, keras


# -- weights ---------------------------------------------------------------------------------------------


def _keras_cache_file(imagenet_file: str) -> Path:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / imagenet_file


def resolve_weights(arch: str, weights: str | None, *, timeout: float = 3.0) -> dict[str, Any]:
    """Where the backbone's weights come from, checked before any work: `{"source", "path", "sha256"}`.

    `imagenet` needs the Keras weights host unless the file is already in Keras' cache; offline this fails in
    seconds (a socket connect), instead of sitting in a download retry, and names the alternatives.
    """
    a = get_arch(arch)
    w = (weights or ("none" if a.imagenet_file is None else "imagenet")).strip()
    if w.lower() == "none":
        return {"source": "none", "path": None, "sha256": None}
    if a.imagenet_file is None:
        raise BaselineError("the small CNN has no pretrained weights: train it with --weights none")
    if w.lower() == "imagenet":
        cached = _keras_cache_file(a.imagenet_file)
        if cached.is_file():
            return {"source": "imagenet", "path": None, "sha256": file_sha256(cached), "file": a.imagenet_file}
        reason = tcp_unreachable(WEIGHTS_HOST, 443, timeout)
        if reason is not None:
            raise BaselineError(
                f"cannot reach {WEIGHTS_HOST} to download ImageNet weights for {arch} ({reason}): "
                f"use --weights none to train from scratch, or --weights PATH with a local {a.imagenet_file}"
            )
        return {"source": "imagenet", "path": None, "sha256": None, "file": a.imagenet_file}
    path = Path(w).expanduser()
    if not path.is_file():
        raise BaselineError(f"--weights {w}: no such file (use imagenet, none, or a local {a.imagenet_file})")
    return {"source": "file", "path": str(path.resolve()), "sha256": file_sha256(path)}


# -- models ----------------------------------------------------------------------------------------------


def build_model(arch: str, num_classes: int, imgsz: int, weights: dict[str, Any]) -> tuple[Any, Any | None]:
    """(model, backbone or None): input `pixels` float32 [N, imgsz, imgsz, 3] RGB 0..255, output softmax [N, K]."""
    a = check_arch(arch, imgsz)
    _, keras = import_tensorflow()
    from keras import layers

    shape = (imgsz, imgsz, 3)
    if a.application is None:
        # The study's small Sequential network: Rescaling, then Conv/MaxPool/BatchNorm/Dropout blocks, Dense head.
        # BatchNorm momentum 0.9, not Keras' 0.99: on a few thousand images a run has a few hundred steps, and with
        # 0.99 the inference statistics still lag far behind the batch statistics (the model then predicts one class).
        blocks: list[Any] = [keras.Input(shape, name="pixels"), layers.Rescaling(1.0 / 255)]
        for filters in (32, 64, 128):
            blocks += [layers.Conv2D(filters, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
                       layers.BatchNormalization(momentum=0.9), layers.Dropout(0.25)]
        blocks += [layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dropout(0.5),
                   layers.Dense(num_classes, activation="softmax", name="probabilities")]
        return keras.Sequential(blocks, name="study_cnn"), None
    apps = keras.applications
    factory = getattr(apps, a.application)
    preprocess = getattr(apps, a.preprocess_module).preprocess_input if a.preprocess_module else None
    source = weights["source"]
    try:
        base = factory(include_top=False, weights={"none": None, "imagenet": "imagenet"}.get(source, weights["path"]), input_shape=shape)
    except Exception as e:  # download or weight-file errors from Keras: one line, with the way out
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BaselineError(f"cannot build {arch} with weights {source} ({msg}): try --weights none or a local weights file") from None
    inp = keras.Input(shape, name="pixels")
    x = preprocess(inp) if preprocess is not None else inp
    pretrained = source != "none"
    if pretrained:
        base.trainable = False
    # Pretrained BatchNorm statistics stay in inference mode, also when fine-tuning later (Keras' guidance).
    x = base(x, training=False) if pretrained else base(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.2)(x)
    out = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inp, out, name=f"{arch}_transfer"), base


def unfreeze_from(base: Any, layer: str) -> int:
    """Make `base` trainable from `layer` (name or index) on, BatchNorm excluded; returns the trainable count."""
    names = [lay.name for lay in base.layers]
    if layer.lstrip("-").isdigit():
        start = int(layer)
        if not -len(names) <= start < len(names):
            raise BaselineError(f"--fine-tune-from {layer}: the backbone has {len(names)} layers")
        start %= len(names)
    elif layer in names:
        start = names.index(layer)
    else:
        hint = ", ".join(names[-6:])
        raise BaselineError(f"--fine-tune-from {layer!r}: no such layer in the backbone (last layers: {hint})")
    _, keras = import_tensorflow()
    base.trainable = True
    n = 0
    for i, lay in enumerate(base.layers):
        lay.trainable = i >= start and not isinstance(lay, keras.layers.BatchNormalization)
        n += int(lay.trainable)
    return n


def load_model(path: Path, threads: int | None = 2) -> Any:
    """A saved model.keras (safe_mode: no arbitrary code from the file); a `BaselineError` if it cannot load."""
    _, keras = import_tensorflow(threads)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:
        raise BaselineError(f"{path}: cannot load the Keras model ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def predict_images(model: Any, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Softmax probabilities [N, K] (float64) of uint8 RGB crops [N, S, S, 3]."""
    if len(images) == 0:
        return np.zeros((0, int(model.output_shape[-1])), np.float64)
    return np.asarray(model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0), dtype=np.float64)
