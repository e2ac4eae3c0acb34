"""The study's training path end to end: data -> frozen encoder embeddings -> logistic head -> reports.

This is the reference pipeline of DESIGN.md (contract 3) as a trainer: decoding, the encoder's own
preprocessing on PIL, PyTorch features and sklearn's LogisticRegression, with every file it could not use
listed in the report rather than dropped.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from waste_edge.data.discovery import Dataset, DatasetError, discover
from waste_edge.data.labels import display_names
from waste_edge.train.embeddings import Embeddings, extract_embeddings
from waste_edge.train.encoders import Encoder, EncoderError, create_encoder
from waste_edge.train.evaluate import EvalReport, headline, write_report
from waste_edge.train.head import STUDY_C, LinearHead, fit_head
from waste_edge.train.run import load_run, make_card, save_run, write_json

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class TrainConfig:
    data: Path
    encoder: str
    out: Path
    C: float = STUDY_C
    sweep: bool = False
    l2_normalize: bool = False
    class_weight: str | None = None
    batch_size: int = 32
    workers: int = 2
    threads: int | None = None
    cache_dir: Path | None = None
    test_size: float = 0.2
    seed: int = 0
    progress: bool = True


@dataclass
class TrainResult:
    run_dir: Path
    head: LinearHead
    report: EvalReport
    n_train: int
    n_extracted: int
    n_cached: int
    seconds: float

    def summary(self) -> str:
        m = self.report.metrics
        return (
            f"{headline(m)}; trained on {self.n_train}; C={self.head.hyperparameters.get('C')}; "
            f"unreadable {m['n_unreadable']}; {self.seconds:.1f}s\nrun directory: {self.run_dir}"
        )


@dataclass
class EvalResult:
    out_dir: Path
    report: EvalReport

    def summary(self) -> str:
        m = self.report.metrics
        auc = "n/a" if m.get("roc_auc") is None else f"{m['roc_auc']:.4f}"
        return f"accuracy {m['accuracy']:.4f} (ROC AUC {auc}) on {m['n']} images, unreadable {m['n_unreadable']}\nreport: {self.out_dir}"


def data_fingerprint(emb: Embeddings) -> str:
    """Content-based: the same files with the same labels and splits give the same fingerprint wherever they live."""
    rows = sorted(f"{s.split}\t{s.label}\t{h}" for s, h in zip(emb.samples, emb.hashes))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def _embed(encoder: Encoder, samples: list, cfg_like: Any, log: Log, desc: str) -> Embeddings:
    emb = extract_embeddings(
        encoder, samples, batch_size=cfg_like.batch_size, workers=cfg_like.workers, threads=cfg_like.threads,
        cache_dir=cfg_like.cache_dir, progress=getattr(cfg_like, "progress", True), desc=desc,
    )
    if emb.n_extracted == 0 and emb.n_cached:
        log(f"{desc}: all {emb.n_cached} embeddings reused from the cache (nothing extracted)")
    else:
        log(f"{desc}: {emb.n_extracted} extracted, {emb.n_cached} reused from the cache, {len(emb.failed)} unreadable")
    return emb


def _split_or_fail(ds: Dataset, name: str) -> list:
    samples = ds.split(name)
    if not samples:
        raise DatasetError(f"{ds.root}: no {name} images (splits found: {', '.join(ds.counts()) or 'none'})")
    return samples


def _unreadable(emb: Embeddings) -> list[tuple[str, str]]:
    return [(str(s.path), why) for s, why in emb.failed]


def train_linear(cfg: TrainConfig, log: Log = _quiet) -> TrainResult:
    t0 = time.perf_counter()
    ds = discover(cfg.data, test_size=cfg.test_size, seed=cfg.seed)
    log(f"dataset {ds.root} ({ds.layout} layout): " + ", ".join(f"{sp} {sum(c.values())}" for sp, c in ds.counts().items()))
    for where, why in ds.problems:
        log(f"skipped {where}: {why}")
    train_s, test_s = _split_or_fail(ds, "train"), _split_or_fail(ds, "test")
    encoder = create_encoder(cfg.encoder)
    log(f"encoder {encoder.id}: {encoder.dim}-d features, weights {encoder.weights['source']}")
    train_e = _embed(encoder, train_s, cfg, log, "train")
    test_e = _embed(encoder, test_s, cfg, log, "test")
    if len(set(train_e.labels)) < 2:
        raise DatasetError("fewer than two classes among the readable training images")
    head = fit_head(train_e.features, train_e.labels, C=cfg.C, sweep=cfg.sweep, l2_normalize=cfg.l2_normalize,
                    class_weight=cfg.class_weight, seed=cfg.seed)
    if head.classes != ds.classes:
        raise DatasetError(f"classes in the training split {head.classes} differ from the dataset's {ds.classes}")
    proba = head.predict_proba(test_e.features)
    unreadable = _unreadable(train_e) + _unreadable(test_e) + list(ds.problems)
    cfg.out.mkdir(parents=True, exist_ok=True)
    report = write_report(cfg.out, test_e.labels, proba, head.classes, unreadable=unreadable,
                          title=f"{encoder.id} + logistic head, {ds.root.name} test split",
                          extra={"split": "test", "encoder": encoder.id})
    m = report.metrics
    card = make_card(
        encoder.card(), head, display_names(head.classes),
        data={
            "source": str(Path(cfg.data).resolve()), "layout": ds.layout, "counts": ds.counts(),
            "fingerprint": data_fingerprint(train_e) + ":" + data_fingerprint(test_e),
            "n_train": len(train_e.samples), "n_test": len(test_e.samples), "n_unreadable": len(unreadable),
            "split_seed": cfg.seed if ds.layout != "kaggle" else None,
        },
        metrics={k: m[k] for k in ("accuracy", "balanced_accuracy", "roc_auc", "n")},
        training={"C": head.hyperparameters.get("C"), "sweep": cfg.sweep, "l2_normalize": cfg.l2_normalize,
                  "class_weight": cfg.class_weight, "batch_size": cfg.batch_size,
                  "embeddings": {"extracted": train_e.n_extracted + test_e.n_extracted, "from_cache": train_e.n_cached + test_e.n_cached}},
    )
    save_run(cfg.out, card, head)
    return TrainResult(cfg.out, head, report, len(train_e.samples), train_e.n_extracted + test_e.n_extracted,
                       train_e.n_cached + test_e.n_cached, time.perf_counter() - t0)


def evaluate_run(
    run_dir: str | Path,
    data: str | Path,
    *,
    split: str = "test",
    out: str | Path | None = None,
    batch_size: int = 32,
    workers: int = 2,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    log: Log = _quiet,
) -> EvalResult:
    """Re-evaluate a run's encoder + head on any dataset split; same report files as training."""
    run = load_run(run_dir)
    ds = discover(data)
    samples = _split_or_fail(ds, split)
    unknown = sorted({s.label for s in samples} - set(run.classes))
    if unknown:
        raise DatasetError(f"labels {unknown} in {data} are not classes of this model {run.classes}")
    encoder = create_encoder(run.encoder_id, relative_to=run.path)
    expected = run.card["encoder"]["weights"].get("sha256")
    if expected != encoder.weights.get("sha256"):
        raise EncoderError(f"encoder weights differ from the ones this run was trained with (sha256 {expected})")
    opts = TrainConfig(data=Path(data), encoder=run.encoder_id, out=Path("."), batch_size=batch_size, workers=workers,
                       threads=threads, cache_dir=Path(cache_dir) if cache_dir else None, progress=progress)
    emb = _embed(encoder, samples, opts, log, split)
    proba = run.head.predict_proba(emb.features)
    out_dir = Path(out) if out else Path(run_dir) / f"eval-{split.lower()}"
    report = write_report(out_dir, emb.labels, proba, run.classes, unreadable=_unreadable(emb) + list(ds.problems),
                          title=f"{run.encoder_id} + logistic head on {Path(data).name} ({split})",
                          extra={"split": split, "run": str(Path(run_dir).resolve()), "data": str(Path(data).resolve())})
    return EvalResult(out_dir, report)
