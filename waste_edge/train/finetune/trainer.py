"""`waste-edge train finetune`: fine-tune EfficientNet-Lite0 on the photos and leave a linear run directory.

The recipe, and why (the numbers behind it are in the README's fine-tuning section):
1. Linear probe first (epoch 0): frozen ImageNet features of the training photos, the study's logistic head
   (C=0.316) fitted on them, copied into the network's final layer. Starting from a fitted head keeps the first
   gradient steps from tearing up the pretrained features (LP-FT, Kumar et al. 2022); it is also the baseline
   the validation curve must beat, and the checkpoint choice keeps it when fine-tuning does not.
2. Fine-tune the top of the network (`freeze_until`: the stem and early blocks stay fixed; on a 2-core CPU
   their backward pass is most of the cost) with AdamW, a short linear warm-up and cosine decay, class-weighted
   cross-entropy (class balance), augmented crops (`augment.py`), channels-last tensors (faster on CPU).
3. Validate on a split carved from TRAIN by duplicate group (never TEST) after every epoch; keep the epoch with
   the lowest validation loss, stop after `patience` epochs without improvement.
4. Save the chosen weights as `encoder.safetensors` and the final layer as `head.json`, evaluate TEST through
   the reference pipeline (PIL preprocessing, PyTorch encoder, the head), write card, metrics and plots.

Every random choice derives from (seed, epoch, batch): shuffling, augmentation and the validation carve, so two
runs with the same seed, data, thread count and torch build give identical weights, and a resumed run continues
exactly where the interrupted one stopped.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from waste_edge._io import file_sha256, library_versions, write_json
from waste_edge.data.discovery import DatasetError, discover
from waste_edge.data.labels import display_names
from waste_edge.train.embeddings import extract_embeddings
from waste_edge.train.encoders import EncoderError, create_encoder
from waste_edge.train.evaluate import EvalReport, compute_metrics, headline, write_report
from waste_edge.train.finetune.augment import build_augment, describe
from waste_edge.train.finetune.data import Crops, carve_validation, decode_crops
from waste_edge.train.finetune.history import EpochRecord, plot_history
from waste_edge.train.finetune.model import FinetuneModel, check_freeze_until, normalise_batch
from waste_edge.train.finetune.weights import (
    BEST_TENSORS, CHECKPOINT_DIR, STATE_RECORD, CheckpointError, load_checkpoint, load_model_tensors, save_checkpoint,
    save_encoder_weights, save_model_tensors,
)
from waste_edge.train.head import STUDY_C, LinearHead, fit_head
from waste_edge.train.card import RunError
from waste_edge.train.config import FinetuneConfig
from waste_edge.train.runs import LinearRun

Log = Callable[[str], None]
ENCODER_FILE = "encoder.safetensors"
HISTORY_FILE, CURVES_FILE = "history.json", "training_curves.png"


@dataclass
class FinetuneResult:
    run_dir: Path
    head: LinearHead
    report: EvalReport
    history: list[EpochRecord]
    best_epoch: int
    seconds: float
    cpu_seconds: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        best = next(r for r in self.history if r.epoch == self.best_epoch)
        return (f"{headline(self.report.metrics)}\nchosen epoch {self.best_epoch} of {self.history[-1].epoch} "
                f"(val loss {best.val_loss:.4f}, val accuracy {best.val_accuracy:.4f}); "
                f"{self.seconds:.0f}s wall, {self.cpu_seconds:.0f}s CPU\nrun directory: {self.run_dir}")


def _seed_of(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _check_out(cfg: FinetuneConfig) -> Path:
    ckpt = cfg.out / CHECKPOINT_DIR
    has_ckpt = (ckpt / STATE_RECORD).is_file()
    if cfg.resume and not has_ckpt:
        raise CheckpointError(f"--resume: {cfg.out} holds no checkpoint of an interrupted run ({ckpt / STATE_RECORD})")
    if not cfg.resume and has_ckpt:
        raise CheckpointError(f"{cfg.out} holds an interrupted run: add --resume to continue it, or choose another --out")
    if not has_ckpt and (cfg.out / "card.json").is_file():
        raise RunError(f"{cfg.out} already holds a finished run: choose another --out")
    return ckpt


def _tensor_batch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # NHWC uint8 -> NCHW view


def _infer(model: FinetuneModel, crops: Crops, spec: Any, batch_size: int, what: str, progress: bool = False) -> torch.Tensor:
    """Features (`what="features"`) or logits of the crops, eval mode, no augmentation."""
    model.eval()
    out = []
    with torch.inference_mode():
        for i in tqdm(range(0, len(crops), batch_size), desc=what, unit="batch", leave=False, disable=not progress):
            x = normalise_batch(_tensor_batch(crops.images[i:i + batch_size]), spec).contiguous(memory_format=torch.channels_last)
            out.append(model.encoder(x) if what == "features" else model(x))
    return torch.cat(out) if out else torch.zeros((0, model.head.out_features))


def _validate(model: FinetuneModel, crops: Crops, spec: Any, cfg: FinetuneConfig, weights: torch.Tensor,
              classes: list[str]) -> tuple[float, dict[str, Any]]:
    logits = _infer(model, crops, spec, cfg.batch_size, "logits")
    labels = torch.from_numpy(crops.labels)
    loss = float(F.cross_entropy(logits, labels, weight=weights))
    proba = torch.softmax(logits.double(), dim=1).numpy()
    metrics = compute_metrics([classes[i] for i in crops.labels], proba, classes)
    return loss, metrics


def _balanced(metrics: dict[str, Any]) -> float:
    bal = metrics.get("balanced_accuracy")
    return float(metrics["accuracy"] if bal is None else bal)


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _train_epoch(model: FinetuneModel, optimizer: torch.optim.Optimizer, crops: Crops, spec: Any, cfg: FinetuneConfig,
                 epoch: int, weights: torch.Tensor, augment: Callable | None) -> tuple[float, float, float]:
    """One pass over the shuffled, augmented training crops; returns (mean loss, accuracy, last lr)."""
    n, bs = len(crops), cfg.batch_size
    steps_per_epoch = math.ceil(n / bs)
    total, warmup = cfg.epochs * steps_per_epoch, int(round(cfg.warmup_epochs * steps_per_epoch))
    order = np.random.default_rng(_seed_of(cfg.seed, epoch)).permutation(n)
    model.train()
    loss_sum, correct, lr = 0.0, 0, cfg.lr
    bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False, disable=not cfg.progress)
    for b in bar:
        idx = np.sort(order[b * bs:(b + 1) * bs])
        y = torch.from_numpy(crops.labels[idx])
        lr = _lr_at((epoch - 1) * steps_per_epoch + b, total, warmup, cfg.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.random.fork_rng(devices=[]):  # augmentation and dropout draw from (seed, epoch, batch) only
            torch.manual_seed(_seed_of(cfg.seed, epoch, b))
            x = _tensor_batch(crops.images[idx])
            if augment is not None:
                x = torch.stack([augment(img) for img in x])
            x = normalise_batch(x, spec).contiguous(memory_format=torch.channels_last)
            logits = model(x)
            loss = F.cross_entropy(logits, y, weight=weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        loss_sum += float(loss.detach()) * len(idx)
        correct += int((logits.argmax(1) == y).sum())
        bar.set_postfix(loss=f"{loss_sum / min(n, (b + 1) * bs):.4f}", acc=f"{correct / min(n, (b + 1) * bs):.3f}")
    bar.close()
    return loss_sum / n, correct / n, lr


def _fingerprint(parts: dict[str, list]) -> str:
    import hashlib

    rows = sorted(f"{name}\t{s.label}\t{file_sha256(s.path)}" for name, samples in parts.items() for s in samples)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def train_finetune(cfg: FinetuneConfig, log: Log = print, *, on_epoch: Callable[[int], None] | None = None) -> FinetuneResult:
    """Fine-tune, choose the checkpoint on validation, write the run directory. `on_epoch(epoch)` runs after every
    saved epoch (tests interrupt a run there)."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, log, on_epoch, wall0, cpu0)
    except KeyboardInterrupt:
        if (cfg.out / CHECKPOINT_DIR / STATE_RECORD).is_file():
            log(f"interrupted: the last finished epoch is saved; continue with the same command and --resume")
        raise
    finally:
        torch.set_num_threads(threads_before)


def _run(cfg: FinetuneConfig, log: Log, on_epoch: Callable[[int], None] | None, wall0: float, cpu0: float) -> FinetuneResult:
    ckpt = _check_out(cfg)
    ds = discover(cfg.data, test_size=cfg.test_size, seed=cfg.seed)
    log(f"dataset {ds.root} ({ds.layout} layout): " + ", ".join(f"{sp} {sum(c.values())}" for sp, c in ds.counts().items()))
    for where, why in ds.problems:
        log(f"skipped {where}: {why}")
    train_all, test = ds.split("train"), ds.split("test")
    if not train_all or not test:
        raise DatasetError(f"{ds.root}: fine-tuning needs TRAIN and TEST images (splits found: {', '.join(ds.counts()) or 'none'})")
    base = create_encoder(cfg.encoder)
    if base.family != "effnet":
        raise EncoderError(f"train finetune fine-tunes EfficientNet-Lite0 encoders (effnet-lite0[/weights]); for {base.id} use train linear")
    check_freeze_until(base.module, cfg.freeze_until)
    spec = replace(base.spec, size=cfg.imgsz)
    log(f"encoder {base.id}: weights {base.weights['source']}; input {spec.size}x{spec.size} ({spec.resize_mode}); "
        f"trainable from block {cfg.freeze_until if cfg.freeze_until is not None else 'stem'}; augment {', '.join(cfg.augment) or 'none'}")
    split = carve_validation(ds, train_all, cfg.val_size, cfg.seed, test_size=cfg.test_size, progress=cfg.progress, log=log)
    log(f"validation: {len(split.val)} of {len(train_all)} TRAIN images ({split.method}; "
        f"{split.linked_groups} duplicate groups kept on one side)")
    classes = ds.classes
    fit = decode_crops(split.fit, spec, classes, workers=cfg.workers, progress=cfg.progress, desc="decoding train")
    val = decode_crops(split.val, spec, classes, workers=cfg.workers, progress=cfg.progress, desc="decoding validation")
    for s, why in fit.failed + val.failed:
        log(f"skipped {s.path}: {why}")
    present = sorted({classes[i] for i in fit.labels})
    if present != classes:
        raise DatasetError(f"the training images hold classes {present}, the dataset {classes}: every class needs training images")
    fingerprint = _fingerprint({"fit": fit.samples, "val": val.samples, "test": test})

    model = FinetuneModel(base.module, len(classes), cfg.freeze_until, cfg.bn, cfg.dropout).to(memory_format=torch.channels_last)
    counts = np.bincount(fit.labels, minlength=len(classes)).astype(np.float64)
    weights = torch.tensor(len(fit) / (len(classes) * counts) if cfg.class_weight == "balanced" else np.ones(len(classes)), dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    augment = build_augment(cfg.augment, spec.size)

    if cfg.resume:
        record = load_checkpoint(ckpt, model, optimizer)
        if record.get("recipe") != cfg.recipe() or record.get("fingerprint") != fingerprint:
            diff = sorted(k for k in cfg.recipe() if record.get("recipe", {}).get(k) != cfg.recipe()[k])
            why = f"options differ: {', '.join(diff)}" if diff else "the data changed"
            raise CheckpointError(f"{cfg.out}: cannot resume ({why}); use the same command as the interrupted run")
        history = [EpochRecord(**r) for r in record["history"]]
        best_epoch, done = int(record["best_epoch"]), bool(record.get("done"))
        log(f"resuming after epoch {record['epoch']} (best so far: epoch {best_epoch})")
    else:
        ckpt.mkdir(parents=True, exist_ok=True)
        t0, c0 = time.perf_counter(), time.process_time()
        feats = _infer(model, fit, spec, cfg.batch_size, "features", cfg.progress).double().numpy()
        probe = fit_head(feats, [classes[i] for i in fit.labels], C=STUDY_C, seed=cfg.seed,
                         class_weight="balanced" if cfg.class_weight == "balanced" else None)
        model.init_head(probe)
        val_loss, vm = _validate(model, val, spec, cfg, weights, classes)
        history = [EpochRecord(0, None, None, val_loss, vm["accuracy"], _balanced(vm), None,
                               time.perf_counter() - t0, time.process_time() - c0, os.getloadavg()[0])]
        best_epoch, done = 0, False
        save_model_tensors(ckpt / BEST_TENSORS, model)
        log(history[0].line(cfg.epochs, True))
        save_checkpoint(ckpt, model, optimizer, _record(cfg, 0, history, best_epoch, fingerprint, False))

    start = history[-1].epoch + 1
    for epoch in range(start, cfg.epochs + 1):
        if done:
            break
        t0, c0 = time.perf_counter(), time.process_time()
        train_loss, train_acc, lr = _train_epoch(model, optimizer, fit, spec, cfg, epoch, weights, augment)
        val_loss, vm = _validate(model, val, spec, cfg, weights, classes)
        rec = EpochRecord(epoch, train_loss, train_acc, val_loss, vm["accuracy"], _balanced(vm), lr,
                          time.perf_counter() - t0, time.process_time() - c0, os.getloadavg()[0])
        history.append(rec)
        best = val_loss < min(r.val_loss for r in history[:-1])
        if best:
            best_epoch = epoch
            save_model_tensors(ckpt / BEST_TENSORS, model)
        done = epoch - best_epoch >= cfg.patience
        save_checkpoint(ckpt, model, optimizer, _record(cfg, epoch, history, best_epoch, fingerprint, done))
        log(rec.line(cfg.epochs, best))
        if done:
            log(f"early stop: no lower validation loss for {cfg.patience} epochs")
        if on_epoch is not None:
            on_epoch(epoch)
    return _finish(cfg, model, spec, base, classes, split, fit, val, test, history, best_epoch, fingerprint, ds, wall0, cpu0, log)


def _record(cfg: FinetuneConfig, epoch: int, history: list[EpochRecord], best_epoch: int, fingerprint: str, done: bool) -> dict[str, Any]:
    return {"epoch": epoch, "best_epoch": best_epoch, "done": done, "recipe": cfg.recipe(), "fingerprint": fingerprint,
            "history": [r.to_dict() for r in history]}


def _finish(cfg: FinetuneConfig, model: FinetuneModel, spec: Any, base: Any, classes: list[str], split: Any, fit: Crops,
            val: Crops, test: list, history: list[EpochRecord], best_epoch: int, fingerprint: str, ds: Any,
            wall0: float, cpu0: float, log: Log) -> FinetuneResult:
    ckpt = cfg.out / CHECKPOINT_DIR
    load_model_tensors(ckpt / BEST_TENSORS, model)
    model.eval()
    hp = {"method": "finetune", "init": f"logistic regression C={STUDY_C} on the frozen features (epoch 0)",
          "loss": f"cross-entropy, class weights {cfg.class_weight}", "best_epoch": best_epoch}
    head = model.to_linear_head(classes, hp)
    provenance = {"base_weights": base.weights, "recipe": cfg.recipe(), "data_fingerprint": fingerprint, "best_epoch": best_epoch}
    weights_sha = save_encoder_weights(cfg.out / ENCODER_FILE, model.encoder, spec, provenance)
    write_json(cfg.out / HISTORY_FILE, {"best_epoch": best_epoch, "epochs": [r.to_dict() for r in history]})
    plot_history(history, best_epoch, cfg.out / CURVES_FILE, f"fine-tuning {base.id} on {Path(cfg.data).name}")

    # TEST, once, through the reference pipeline: the encoder as the registry loads it from the run directory.
    encoder = create_encoder(f"effnet-lite0/{ENCODER_FILE}", root=cfg.out)
    if encoder.weights["sha256"] != weights_sha:
        raise EncoderError(f"{cfg.out / ENCODER_FILE} changed while the run was being written")
    emb = extract_embeddings(encoder, test, batch_size=cfg.batch_size, workers=cfg.workers, cache_dir=cfg.cache_dir,
                             progress=cfg.progress, desc="test")
    unreadable = [(str(s.path), why) for s, why in fit.failed + val.failed + emb.failed] + list(ds.problems)
    report = write_report(cfg.out, emb.labels, head.predict_proba(emb.features), classes, unreadable=unreadable,
                          title=f"{base.id} fine-tuned + linear head, {Path(cfg.data).name} test split",
                          extra={"split": "test", "encoder": encoder.id})
    best = next(r for r in history if r.epoch == best_epoch)
    seconds, cpu_seconds = time.perf_counter() - wall0, time.process_time() - cpu0
    m = report.metrics
    LinearRun.create(
        cfg.out, encoder.card(), head, display_names(classes),
        data={
            "source": str(Path(cfg.data).resolve()), "layout": ds.layout, "counts": ds.counts(), "fingerprint": fingerprint,
            "n_train": len(fit), "n_val": len(val), "n_test": len(emb.samples), "n_unreadable": len(unreadable),
            "validation": split.method, "validation_linked_groups": split.linked_groups,
            "split_seed": cfg.seed if ds.layout != "kaggle" else None,
        },
        metrics={k: m[k] for k in ("accuracy", "balanced_accuracy", "roc_auc", "n")},
        training={
            "method": "finetune", "recipe": cfg.recipe(), "augment": describe(cfg.augment), "base_encoder": base.card(),
            "best_epoch": best_epoch, "epochs_run": history[-1].epoch, "stopped_early": history[-1].epoch < cfg.epochs,
            "validation": {"loss": best.val_loss, "accuracy": best.val_accuracy, "balanced_accuracy": best.val_balanced_accuracy,
                           "linear_probe_accuracy": history[0].val_accuracy},
            "threads": torch.get_num_threads(), "wall_seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
            "history": HISTORY_FILE, "curves": CURVES_FILE,
            "versions": library_versions(["torch", "torchvision", "safetensors", "numpy", "pillow"]),
        },
    )
    shutil.rmtree(ckpt, ignore_errors=True)  # finished: nothing left to resume
    return FinetuneResult(cfg.out, head, report, history, best_epoch, seconds, cpu_seconds)
