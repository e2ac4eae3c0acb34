"""The study's Keras baselines (small CNN, VGG16, EfficientNetB0, InceptionV3) as first-class runs.

They go through the same data discovery and decoding as the linear pipeline, leave the same report files,
and export to the same fused graph (`waste_edge.export.keras_onnx`), so every later tool treats them like
any other model. TensorFlow is an optional extra (`[baselines]`) imported only inside these functions.

Choices that matter:
- Geometry is the toolkit's `box_crop` spec (centre square, integer box reduce, bilinear to `imgsz`), the one
  the edge encoders use: the fused graph already reproduces it to the grey level, so the exported model sees
  what the Keras model was trained and evaluated on. Everything after the uint8 crop (scaling, the
  `keras.applications` `preprocess_input`) lives INSIDE the Keras model, whose input is float RGB 0..255.
- Images are decoded once (threads, progress bar) into one uint8 array and fed by a tf.data index pipeline:
  decoding large JPEGs every epoch would dominate training on a 2-core machine. Memory is N x imgsz^2 x 3 bytes.
- ImageNet backbones first train the head on a frozen backbone (BatchNorm kept in inference mode), then,
  with `fine_tune_from`, unfreeze from that layer on at a low learning rate. With `weights="none"` there is
  nothing to transfer, so the whole network trains from the start with live BatchNorm statistics.
- The best epoch (validation loss) is saved as `model.keras` (Keras' zip of JSON config + weights, loaded
  with `safe_mode=True`), and the TEST metrics are computed from that saved file, not from memory.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from waste_edge.data.decode import DecodeError, load_rgb
from waste_edge.data.discovery import Dataset, DatasetError, Sample, discover, stratified_split
from waste_edge.data.labels import display_names
from waste_edge.errors import WasteEdgeError
from waste_edge.train.embeddings import file_sha256
from waste_edge.train.evaluate import EvalReport, headline, write_report
from waste_edge.train.preprocess import PreprocessSpec, resize_crop
from waste_edge.train.run import CARD_FORMAT, CARD_VERSION, CardFields, RunError, library_versions, now_iso, read_card, write_json

Log = Callable[[str], None]

ARCHS = ("cnn", "vgg16", "efficientnetb0", "inceptionv3")
DEFAULT_IMGSZ = {"cnn": 128, "vgg16": 224, "efficientnetb0": 224, "inceptionv3": 299}
MIN_IMGSZ = {"cnn": 16, "vgg16": 32, "efficientnetb0": 32, "inceptionv3": 75}
MODEL_FILE = "model.keras"
KIND = "keras"
# Where keras.applications downloads ImageNet weights from, and the no-top file each backbone asks for.
WEIGHTS_HOST = "storage.googleapis.com"
IMAGENET_FILES = {
    "vgg16": "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "efficientnetb0": "efficientnetb0_notop.h5",
    "inceptionv3": "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
}
NORMALISATION = {
    "cnn": "inside the model: Rescaling(1/255)",
    "vgg16": "inside the model: keras.applications.vgg16.preprocess_input (RGB->BGR, ImageNet mean subtracted)",
    "efficientnetb0": "inside the model: EfficientNetB0's own Rescaling + Normalization layers",
    "inceptionv3": "inside the model: keras.applications.inception_v3.preprocess_input (x/127.5 - 1)",
}


class BaselineError(WasteEdgeError):
    """A Keras baseline cannot be built, trained or loaded (bad option, missing weights, no TensorFlow)."""


def _quiet(_: str) -> None:
    pass


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


def baseline_versions() -> dict[str, str]:
    out = library_versions()
    for dist in ("tensorflow-cpu", "tensorflow", "keras", "tf2onnx"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


# -- models ----------------------------------------------------------------------------------------------


def preprocess_spec(imgsz: int) -> PreprocessSpec:
    """Geometry of every baseline; mean 0 / std 1 because normalisation is part of the Keras model itself."""
    return PreprocessSpec(size=int(imgsz), resize_mode="box_crop", interpolation="bilinear", antialias=True,
                          mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def preprocess_card(arch: str, imgsz: int) -> dict[str, Any]:
    return preprocess_spec(imgsz).to_dict() | {"model_input": "float32 NHWC RGB 0..255", "normalisation": NORMALISATION[arch]}


def check_arch(arch: str, imgsz: int) -> None:
    if arch not in ARCHS:
        raise BaselineError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHS)}")
    if imgsz < MIN_IMGSZ[arch]:
        raise BaselineError(f"{arch} needs --imgsz >= {MIN_IMGSZ[arch]}, got {imgsz}")


def _keras_cache_file(arch: str) -> Path:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / IMAGENET_FILES[arch]


def resolve_weights(arch: str, weights: str | None, *, timeout: float = 3.0) -> dict[str, Any]:
    """Where the backbone's weights come from, checked before any work: `{"source", "path", "sha256"}`.

    `imagenet` needs the Keras weights host unless the file is already in Keras' cache; offline this fails in
    seconds (a socket connect), instead of sitting in a download retry, and names the alternatives.
    """
    w = (weights or ("none" if arch == "cnn" else "imagenet")).strip()
    if w.lower() == "none":
        return {"source": "none", "path": None, "sha256": None}
    if arch == "cnn":
        raise BaselineError("the small CNN has no pretrained weights: train it with --weights none")
    if w.lower() == "imagenet":
        cached = _keras_cache_file(arch)
        if cached.is_file():
            return {"source": "imagenet", "path": None, "sha256": file_sha256(cached), "file": IMAGENET_FILES[arch]}
        try:
            socket.create_connection((WEIGHTS_HOST, 443), timeout=timeout).close()
        except OSError as e:
            raise BaselineError(
                f"cannot reach {WEIGHTS_HOST} to download ImageNet weights for {arch} ({e.strerror or e}): "
                f"use --weights none to train from scratch, or --weights PATH with a local {IMAGENET_FILES[arch]}"
            ) from None
        return {"source": "imagenet", "path": None, "sha256": None, "file": IMAGENET_FILES[arch]}
    path = Path(w).expanduser()
    if not path.is_file():
        raise BaselineError(f"--weights {w}: no such file (use imagenet, none, or a local {IMAGENET_FILES[arch]})")
    return {"source": "file", "path": str(path.resolve()), "sha256": file_sha256(path)}


def _backbone_weights_arg(weights: dict[str, Any]) -> str | None:
    return {"none": None, "imagenet": "imagenet"}.get(weights["source"], weights["path"])


def build_model(arch: str, num_classes: int, imgsz: int, weights: dict[str, Any]) -> tuple[Any, Any | None]:
    """(model, backbone or None): input `pixels` float32 [N, imgsz, imgsz, 3] RGB 0..255, output softmax [N, K]."""
    check_arch(arch, imgsz)
    _, keras = import_tensorflow()
    from keras import layers

    shape = (imgsz, imgsz, 3)
    if arch == "cnn":
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
    factory, preprocess = {
        "vgg16": (apps.VGG16, apps.vgg16.preprocess_input),
        "efficientnetb0": (apps.EfficientNetB0, None),  # rescales and normalises inside the model
        "inceptionv3": (apps.InceptionV3, apps.inception_v3.preprocess_input),
    }[arch]
    try:
        base = factory(include_top=False, weights=_backbone_weights_arg(weights), input_shape=shape)
    except Exception as e:  # download or weight-file errors from Keras: one line, with the way out
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BaselineError(f"cannot build {arch} with weights {weights['source']} ({msg}): try --weights none or a local weights file") from None
    inp = keras.Input(shape, name="pixels")
    x = preprocess(inp) if preprocess is not None else inp
    pretrained = weights["source"] != "none"
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


# -- data ------------------------------------------------------------------------------------------------


@dataclass
class ImageSet:
    """Decoded `imgsz` crops of some samples, with what could not be decoded."""

    samples: list[Sample]
    images: np.ndarray  # uint8 [N, S, S, 3] RGB
    hashes: list[str]
    failed: list[tuple[Sample, str]] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [s.label for s in self.samples]


def load_images(samples: Sequence[Sample], spec: PreprocessSpec, *, workers: int = 2, progress: bool = True, desc: str = "decode") -> ImageSet:
    """Decode and crop every sample once (threads), keeping unreadable files with their reason."""

    def one(s: Sample) -> tuple[np.ndarray | None, str | None, str]:
        try:
            crop = np.asarray(resize_crop(load_rgb(s.path), spec), dtype=np.uint8)
            return crop, file_sha256(s.path), ""
        except DecodeError as e:
            return None, None, str(e)
        except OSError as e:
            return None, None, f"cannot read file: {e.strerror or e}"

    ok: list[Sample] = []
    crops: list[np.ndarray] = []
    hashes: list[str] = []
    failed: list[tuple[Sample, str]] = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for s, (crop, h, why) in tqdm(zip(samples, pool.map(one, samples)), total=len(samples), desc=desc, unit="img", disable=not progress):
            if crop is None:
                failed.append((s, why))
            else:
                ok.append(s)
                crops.append(crop)
                hashes.append(str(h))
    arr = np.stack(crops) if crops else np.zeros((0, spec.size, spec.size, 3), np.uint8)
    return ImageSet(ok, arr, hashes, failed)


def tf_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, *, shuffle: bool, seed: int = 0) -> Any:
    """Shuffled index batches gathered from the decoded array, float RGB 0..255, prefetched.

    Indices rather than `from_tensor_slices(images)`: the array is not copied into the graph (no 2 GB limit).
    """
    tf, _ = import_tensorflow()
    n = len(images)
    size = images.shape[1:]

    def gather(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return images[idx].astype(np.float32), labels[idx].astype(np.int64)

    def tf_gather(idx: Any) -> tuple[Any, Any]:
        x, y = tf.numpy_function(gather, [idx], (tf.float32, tf.int64))
        x.set_shape((None, *size))
        y.set_shape((None,))
        return x, y

    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(tf_gather, num_parallel_calls=tf.data.AUTOTUNE)
    if shuffle:
        ds = ds.map(lambda x, y: (tf.image.random_flip_left_right(x, seed=seed), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def data_fingerprint(samples: Sequence[Sample], hashes: Sequence[str]) -> str:
    """Content-based, like the linear pipeline's: same files, labels and splits give the same fingerprint."""
    rows = sorted(f"{s.split}\t{s.label}\t{h}" for s, h in zip(samples, hashes))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _split_or_fail(ds: Dataset, name: str) -> list[Sample]:
    samples = ds.split(name)
    if not samples:
        raise DatasetError(f"{ds.root}: no {name} images (splits found: {', '.join(ds.counts()) or 'none'})")
    return samples


def _carve_validation(train: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out a stratified part of TRAIN for early stopping when the data has no VAL split."""
    parts = stratified_split([s.label for s in train], fraction, seed)
    return [s for s, p in zip(train, parts) if p == "train"], [s for s, p in zip(train, parts) if p == "test"]


# -- runs ------------------------------------------------------------------------------------------------


@dataclass
class KerasRun(CardFields):
    """A run directory holding a Keras baseline (card kind "keras" + model.keras)."""

    path: Path
    card: dict[str, Any]

    @property
    def kind(self) -> str:
        return KIND

    @property
    def arch(self) -> str:
        return str(self.card["arch"])

    @property
    def imgsz(self) -> int:
        return int(self.card["imgsz"])

    @property
    def encoder_id(self) -> str:
        return f"keras:{self.arch}"

    @property
    def spec(self) -> PreprocessSpec:
        return PreprocessSpec.from_dict(self.card["preprocess"])

    @property
    def model_path(self) -> Path:
        return self.path / self.card["model"]["file"]

    @property
    def model_sha256(self) -> str:
        return str(self.card["model"]["sha256"])

    def load_model(self, threads: int | None = 2) -> Any:
        """The saved Keras model (safe_mode: no arbitrary code from the file), checked against the card."""
        _, keras = import_tensorflow(threads)
        try:
            return keras.saving.load_model(self.model_path, compile=False, safe_mode=True)
        except Exception as e:
            raise RunError(f"{self.model_path}: cannot load the Keras model ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def load_keras_run(run_dir: str | Path) -> KerasRun:
    """Read card.json of a Keras run and check that model.keras is the file the card describes."""
    path = Path(run_dir)
    card = read_card(path)
    if card.get("kind") != KIND:
        raise RunError(f"{path} holds a {card.get('kind', 'linear')!r} run, not a Keras baseline")
    for key in ("arch", "imgsz", "classes", "model", "preprocess"):
        if key not in card:
            raise RunError(f"{path / 'card.json'}: Keras run card without {key!r}")
    run = KerasRun(path, card)
    if not run.model_path.is_file():
        raise RunError(f"{path}: {run.model_path.name} is missing")
    if file_sha256(run.model_path) != run.model_sha256:
        raise RunError(f"{run.model_path} does not match the card's sha256 (replaced after training?)")
    return run


def predict_images(model: Any, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Softmax probabilities [N, K] (float64) of uint8 RGB crops [N, S, S, 3]."""
    if len(images) == 0:
        return np.zeros((0, int(model.output_shape[-1])), np.float64)
    return np.asarray(model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0), dtype=np.float64)


class KerasReference:
    """The reference pipeline of a Keras run for `parity`: PIL decode -> box_crop -> the Keras model itself."""

    def __init__(self, run: KerasRun, threads: int | None = 2) -> None:
        self.run = run
        self.spec = run.spec
        self.model = run.load_model(threads)

    def crop_uint8(self, img: Any) -> np.ndarray:
        """The geometric part alone (3 x S x S uint8 RGB): what the fused graph's `pixels` stage should hold."""
        return np.asarray(resize_crop(img.convert("RGB"), self.spec), dtype=np.uint8).transpose(2, 0, 1)

    def proba(self, images: Sequence[Any]) -> np.ndarray:
        """Probabilities [N, K] of PIL RGB images, exactly as training and evaluation computed them."""
        crops = np.stack([np.asarray(resize_crop(im.convert("RGB"), self.spec), dtype=np.uint8) for im in images])
        return predict_images(self.model, crops)


@dataclass
class BaselineConfig:
    data: Path
    arch: str
    out: Path
    epochs: int = 10
    imgsz: int | None = None  # None: DEFAULT_IMGSZ[arch]
    batch_size: int = 32
    weights: str | None = None  # imagenet | none | PATH; None: imagenet, or none for the CNN
    fine_tune_from: str | None = None
    fine_tune_epochs: int | None = None  # None: same as epochs
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-5
    patience: int = 3
    val_fraction: float = 0.1
    workers: int = 2
    threads: int = 2
    test_size: float = 0.2
    seed: int = 0
    progress: bool = True


@dataclass
class BaselineResult:
    run_dir: Path
    report: EvalReport
    n_train: int
    n_val: int
    epochs_run: int
    best_epoch: int
    seconds: float

    def summary(self) -> str:
        m = self.report.metrics
        return (
            f"{headline(m)}; trained on {self.n_train} (validation {self.n_val}), {self.epochs_run} epochs, best epoch {self.best_epoch}; "
            f"unreadable {m['n_unreadable']}; {self.seconds:.1f}s\nrun directory: {self.run_dir}"
        )


def _epoch_logger(keras: Any, log: Log, phase: str) -> Any:
    class EpochLog(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            vals = ", ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items() if k != "learning_rate")
            log(f"{phase} epoch {epoch + 1}: {vals} ({time.perf_counter() - self.t0:.1f}s)")

    return EpochLog()


def train_baseline(cfg: BaselineConfig, log: Log = _quiet) -> BaselineResult:
    """Train one baseline, save the best epoch as model.keras, evaluate it on TEST, write the run directory."""
    t0 = time.perf_counter()
    imgsz = int(cfg.imgsz or DEFAULT_IMGSZ.get(cfg.arch, 224))
    check_arch(cfg.arch, imgsz)
    weights = resolve_weights(cfg.arch, cfg.weights)  # before any decoding: fail fast offline
    if cfg.fine_tune_from is not None and (cfg.arch == "cnn" or weights["source"] == "none"):
        raise BaselineError("--fine-tune-from needs a pretrained backbone (the whole network already trains with --weights none)")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise BaselineError("--epochs and --batch-size must be positive")
    ds = discover(cfg.data, test_size=cfg.test_size, seed=cfg.seed)
    log(f"dataset {ds.root} ({ds.layout} layout): " + ", ".join(f"{sp} {sum(c.values())}" for sp, c in ds.counts().items()))
    for where, why in ds.problems:
        log(f"skipped {where}: {why}")
    train_s, test_s = _split_or_fail(ds, "train"), _split_or_fail(ds, "test")
    val_s = ds.split("val")
    if not val_s:
        train_s, val_s = _carve_validation(train_s, cfg.val_fraction, cfg.seed)
        log(f"no VAL split: holding out {len(val_s)} of the training images for early stopping")
    spec = preprocess_spec(imgsz)
    tf, keras = import_tensorflow(cfg.threads)
    keras.utils.set_random_seed(cfg.seed)
    sets = {name: load_images(s, spec, workers=cfg.workers, progress=cfg.progress, desc=name)
            for name, s in (("train", train_s), ("val", val_s), ("test", test_s))}
    tr, va, te = sets["train"], sets["val"], sets["test"]
    log(f"decoded {sum(len(s.images) for s in sets.values())} images at {imgsz}x{imgsz} "
        f"({sum(s.images.nbytes for s in sets.values()) / 1e6:.0f} MB), unreadable {sum(len(s.failed) for s in sets.values())}")
    classes = list(ds.classes)
    if len(set(tr.labels)) < 2:
        raise DatasetError("fewer than two classes among the readable training images")
    if len(te.samples) == 0:
        raise DatasetError("none of the test images could be decoded")
    y = {k: np.array([classes.index(lab) for lab in s.labels], np.int64) for k, s in sets.items()}
    train_ds = tf_dataset(tr.images, y["train"], cfg.batch_size, shuffle=True, seed=cfg.seed)
    val_ds = tf_dataset(va.images, y["val"], cfg.batch_size, shuffle=False) if len(va.images) else None
    monitor = "val_loss" if val_ds is not None else "loss"
    if val_ds is None:
        log("no readable validation images: early stopping and checkpointing monitor the training loss")

    model, base = build_model(cfg.arch, len(classes), imgsz, weights)
    log(f"{cfg.arch}: {model.count_params():,} parameters, weights {weights['source']}, input {imgsz}x{imgsz}")
    cfg.out.mkdir(parents=True, exist_ok=True)
    model_file = cfg.out / MODEL_FILE
    if model_file.exists():
        model_file.unlink()  # never evaluate a stale model from an earlier run in the same folder
    verbose = 1 if cfg.progress else 0
    history: list[dict[str, float]] = []
    best = {"value": float("inf"), "epoch": 0}

    def fit(epochs: int, lr: float, phase: str) -> None:
        # No XLA: compiling a backbone costs minutes on 2 CPU cores and saves nothing at this scale.
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"], jit_compile=False)
        ckpt = keras.callbacks.ModelCheckpoint(str(model_file), monitor=monitor, save_best_only=True,
                                               initial_value_threshold=best["value"] if np.isfinite(best["value"]) else None)
        stop = keras.callbacks.EarlyStopping(monitor=monitor, patience=cfg.patience, restore_best_weights=True)
        h = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=verbose, shuffle=False,
                      callbacks=[ckpt, stop, _epoch_logger(keras, log, phase)])
        offset = len(history)
        for i in range(len(h.epoch)):
            row = {k: float(v[i]) for k, v in h.history.items()}
            history.append({"phase": phase, **row})  # type: ignore[dict-item]
            if row.get(monitor, float("inf")) < best["value"]:
                best.update(value=row[monitor], epoch=offset + i + 1)

    fit(cfg.epochs, cfg.learning_rate, "train" if base is None or weights["source"] == "none" else "head")
    if cfg.fine_tune_from is not None and base is not None:
        n = unfreeze_from(base, cfg.fine_tune_from)
        log(f"fine-tuning {n} backbone layers from {cfg.fine_tune_from!r} at learning rate {cfg.fine_tune_learning_rate}")
        fit(cfg.fine_tune_epochs or cfg.epochs, cfg.fine_tune_learning_rate, "fine-tune")
    if not model_file.exists():  # the monitored loss was never finite: keep the last weights, say so
        log(f"warning: {monitor} never improved; saving the last epoch")
        model.save(model_file)

    best_model = keras.saving.load_model(model_file, compile=False, safe_mode=True)
    proba = predict_images(best_model, te.images, cfg.batch_size)
    unreadable = [(str(s.path), why) for st in sets.values() for s, why in st.failed] + list(ds.problems)
    report = write_report(cfg.out, te.labels, proba, classes, unreadable=unreadable,
                          title=f"keras {cfg.arch} ({'random init' if weights['source'] == 'none' else weights['source'] + ' weights'}), {ds.root.name} test split",
                          extra={"split": "test", "encoder": f"keras:{cfg.arch}", "kind": KIND})
    m = report.metrics
    card = {
        "format": CARD_FORMAT,
        "version": CARD_VERSION,
        "kind": KIND,
        "created": now_iso(),
        "arch": cfg.arch,
        "imgsz": imgsz,
        "encoder": {"id": f"keras:{cfg.arch}", "weights": weights},
        "preprocess": preprocess_card(cfg.arch, imgsz),
        "classes": classes,
        "display_names": display_names(classes),
        "model": {"file": MODEL_FILE, "sha256": file_sha256(model_file), "format": "keras (zip: JSON config + weights)",
                  "parameters": int(best_model.count_params()), "input": "pixels float32 [N, imgsz, imgsz, 3] RGB 0..255",
                  "output": "softmax probabilities [N, K] in `classes` order"},
        "data": {
            "source": str(Path(cfg.data).resolve()), "layout": ds.layout, "counts": ds.counts(),
            "fingerprint": ":".join(data_fingerprint(s.samples, s.hashes) for s in (tr, va, te)),
            "n_train": len(tr.samples), "n_val": len(va.samples), "n_test": len(te.samples), "n_unreadable": len(unreadable),
            "split_seed": cfg.seed if ds.layout != "kaggle" else None,
            "validation": "VAL split" if ds.split("val") else f"{cfg.val_fraction} of TRAIN, stratified, seed {cfg.seed}",
        },
        "metrics": {k: m[k] for k in ("accuracy", "balanced_accuracy", "roc_auc", "n")},
        "training": {
            "epochs": cfg.epochs, "epochs_run": len(history), "best_epoch": best["epoch"], "monitor": monitor,
            "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate, "patience": cfg.patience,
            "fine_tune_from": cfg.fine_tune_from, "fine_tune_epochs": cfg.fine_tune_epochs if cfg.fine_tune_from else None,
            "fine_tune_learning_rate": cfg.fine_tune_learning_rate if cfg.fine_tune_from else None,
            "augmentation": "random horizontal flip", "seed": cfg.seed, "threads": cfg.threads,
            "seconds": round(time.perf_counter() - t0, 1), "history": history,
        },
        "versions": baseline_versions(),
    }
    write_json(cfg.out / "card.json", card)
    return BaselineResult(cfg.out, report, len(tr.samples), len(va.samples), len(history), best["epoch"], time.perf_counter() - t0)


def evaluate_keras_run(
    run_dir: str | Path,
    data: str | Path,
    *,
    split: str = "test",
    out: str | Path | None = None,
    batch_size: int = 32,
    workers: int = 2,
    threads: int = 2,
    progress: bool = True,
) -> EvalReport:
    """Re-evaluate a Keras run on any dataset: the same four report files as `waste-edge eval`."""
    run = load_keras_run(run_dir)
    ds = discover(data)
    samples = ds.split(split)
    if not samples:
        raise DatasetError(f"{ds.root}: no {split} images")
    unknown = sorted({s.label for s in samples} - set(run.classes))
    if unknown:
        raise DatasetError(f"{ds.root}: labels {unknown} are not among the run's classes {run.classes}")
    model = run.load_model(threads)
    images = load_images(samples, run.spec, workers=workers, progress=progress, desc=split)
    if not len(images.samples):
        raise DatasetError(f"{ds.root}: none of the {len(samples)} {split} images could be decoded")
    proba = predict_images(model, images.images, batch_size)
    out_dir = Path(out) if out is not None else run.path / f"eval-{split}"
    unreadable = [(str(s.path), why) for s, why in images.failed] + list(ds.problems)
    return write_report(out_dir, images.labels, proba, run.classes, unreadable=unreadable,
                        title=f"keras {run.arch}, {ds.root.name} {split} split", extra={"split": split, "encoder": run.encoder_id, "kind": KIND})
