"""`train_baseline`: one of the study's Keras baselines, trained, saved, evaluated and written as a run directory.

The run goes through the same data discovery and decoding as the linear pipeline, its card is made by the
same card writer (`train.card.make_card`, kind "keras"), and it leaves the same report files, so every later
tool (`eval`, `export`, `parity`, `bench`) treats it like any other run.

The best epoch (validation loss) is saved as `model.keras` (Keras' zip of JSON config + weights, loaded with
`safe_mode=True`), and the TEST metrics are computed from that saved file, not from memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from waste_edge._io import Log, file_sha256, quiet
from waste_edge.data.discovery import DatasetError, discover
from waste_edge.data.labels import display_names
from waste_edge.train.card import CARD_LIBRARIES, data_fingerprint, make_card, write_card
from waste_edge.train.config import BaselineConfig
from waste_edge.train.evaluate import EvalReport, headline, write_report
from waste_edge.train.keras.archs import (
    KIND, LIBRARIES, MODEL_FILE, BaselineError, build_model, check_arch, get_arch, import_tensorflow, predict_images,
    preprocess_card, preprocess_spec, resolve_weights, unfreeze_from,
)
from waste_edge.train.keras.data import carve_validation, load_images, tf_dataset

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


def train_baseline(cfg: BaselineConfig, log: Log = quiet) -> BaselineResult:
    """Train one baseline, save the best epoch as model.keras, evaluate it on TEST, write the run directory."""
    t0 = time.perf_counter()
    imgsz = int(cfg.imgsz or get_arch(cfg.arch).default_imgsz)
    check_arch(cfg.arch, imgsz)
    weights = resolve_weights(cfg.arch, cfg.weights)  # before any decoding: fail fast offline
    if cfg.fine_tune_from is not None and (get_arch(cfg.arch).imagenet_file is None or weights["source"] == "none"):
        raise BaselineError("--fine-tune-from needs a pretrained backbone (the whole network already trains with --weights none)")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise BaselineError("--epochs and --batch-size must be positive")
    ds = discover(cfg.data, test_size=cfg.test_size, seed=cfg.seed)
    log(ds.summary())
    for where, why in ds.problems:
        log(f"skipped {where}: {why}")
    train_s, test_s = ds.require("train"), ds.require("test")
    val_s = ds.split("val")
    if not val_s:
        train_s, val_s = carve_validation(train_s, cfg.val_fraction, cfg.seed)
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
    unreadable = [u for st in sets.values() for u in st.unreadable()] + list(ds.problems)
    report = write_report(cfg.out, te.labels, proba, classes, unreadable=unreadable,
                          title=f"keras {cfg.arch} ({'random init' if weights['source'] == 'none' else weights['source'] + ' weights'}), {ds.root.name} test split",
                          extra={"split": "test", "encoder": f"keras:{cfg.arch}", "kind": KIND})
    m = report.metrics
    card = make_card(
        KIND,
        encoder={"id": f"keras:{cfg.arch}", "weights": weights},
        preprocess=preprocess_card(cfg.arch, imgsz),
        classes=classes,
        display_names=display_names(classes),
        arch=cfg.arch,
        imgsz=imgsz,
        model={"file": MODEL_FILE, "sha256": file_sha256(model_file), "format": "keras (zip: JSON config + weights)",
               "parameters": int(best_model.count_params()), "input": "pixels float32 [N, imgsz, imgsz, 3] RGB 0..255",
               "output": "softmax probabilities [N, K] in `classes` order"},
        data={
            "source": str(Path(cfg.data).resolve()), "layout": ds.layout, "counts": ds.counts(),
            "fingerprint": ":".join(data_fingerprint(s.samples, s.hashes) for s in (tr, va, te)),
            "n_train": len(tr.samples), "n_val": len(va.samples), "n_test": len(te.samples), "n_unreadable": len(unreadable),
            "split_seed": cfg.seed if ds.layout != "kaggle" else None,
            "validation": "VAL split" if ds.split("val") else f"{cfg.val_fraction} of TRAIN, stratified, seed {cfg.seed}",
        },
        metrics={k: m[k] for k in ("accuracy", "balanced_accuracy", "roc_auc", "n")},
        training={
            "epochs": cfg.epochs, "epochs_run": len(history), "best_epoch": best["epoch"], "monitor": monitor,
            "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate, "patience": cfg.patience,
            "fine_tune_from": cfg.fine_tune_from, "fine_tune_epochs": cfg.fine_tune_epochs if cfg.fine_tune_from else None,
            "fine_tune_learning_rate": cfg.fine_tune_learning_rate if cfg.fine_tune_from else None,
            "augmentation": "random horizontal flip", "seed": cfg.seed, "threads": cfg.threads,
            "seconds": round(time.perf_counter() - t0, 1), "history": history,
        },
        libraries=CARD_LIBRARIES + LIBRARIES,
    )
    write_card(cfg.out, card)
    return BaselineResult(cfg.out, report, len(tr.samples), len(va.samples), len(history), best["epoch"], time.perf_counter() - t0)
