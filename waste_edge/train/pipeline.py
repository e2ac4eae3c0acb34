"""The study's training path end to end: data -> frozen encoder embeddings -> logistic head -> reports.

This is the reference pipeline of ARCHITECTURE.md (contract 3) as a trainer: decoding, the encoder's own
preprocessing on PIL, PyTorch features and sklearn's LogisticRegression, with every file it could not use
listed in the report rather than dropped. The run directory it writes is a `LinearRun` (train/runs.py),
which also re-evaluates it (`waste-edge eval`).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

from waste_edge._io import Log, quiet
from waste_edge.data.discovery import DatasetError, discover
from waste_edge.data.labels import display_names
from waste_edge.train.card import data_fingerprint
from waste_edge.train.config import TrainConfig
from waste_edge.train.embeddings import extract_embeddings
from waste_edge.train.encoders import create_encoder
from waste_edge.train.evaluate import EvalReport, headline, write_report
from waste_edge.train.head import LinearHead, fit_head
from waste_edge.train.runs import LinearRun

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


def train_linear(cfg: TrainConfig, log: Log = quiet) -> TrainResult:
    t0 = time.perf_counter()
    ds = discover(cfg.data, test_size=cfg.test_size, seed=cfg.seed)
    log(ds.summary())
    for where, why in ds.problems:
        log(f"skipped {where}: {why}")
    train_s, test_s = ds.require("train"), ds.require("test")
    encoder = create_encoder(cfg.encoder)
    log(f"encoder {encoder.id}: {encoder.dim}-d features, weights {encoder.weights['source']}")
    embed = functools.partial(extract_embeddings, encoder, batch_size=cfg.batch_size, workers=cfg.workers, threads=cfg.threads,
                              cache_dir=cfg.cache_dir, progress=cfg.progress, log=log,
                              device=cfg.device, amp=cfg.amp, runner=cfg.runner)
    train_e, test_e = embed(train_s, desc="train"), embed(test_s, desc="test")
    if len(set(train_e.labels)) < 2:
        raise DatasetError("fewer than two classes among the readable training images")
    head = fit_head(train_e.features, train_e.labels, C=cfg.C, sweep=cfg.sweep, l2_normalize=cfg.l2_normalize,
                    class_weight=cfg.class_weight, seed=cfg.seed)
    if head.classes != ds.classes:
        raise DatasetError(f"classes in the training split {head.classes} differ from the dataset's {ds.classes}")
    proba = head.predict_proba(test_e.features)
    unreadable = train_e.unreadable() + test_e.unreadable() + list(ds.problems)
    cfg.out.mkdir(parents=True, exist_ok=True)
    report = write_report(cfg.out, test_e.labels, proba, head.classes, unreadable=unreadable,
                          title=f"{encoder.id} + logistic head, {ds.root.name} test split",
                          extra={"split": "test", "encoder": encoder.id})
    m = report.metrics
    LinearRun.create(
        cfg.out, encoder.card(), head, display_names(head.classes),
        data={
            "source": str(Path(cfg.data).resolve()), "layout": ds.layout, "counts": ds.counts(),
            "fingerprint": data_fingerprint(train_e.samples, train_e.hashes) + ":" + data_fingerprint(test_e.samples, test_e.hashes),
            "n_train": len(train_e.samples), "n_test": len(test_e.samples), "n_unreadable": len(unreadable),
            "split_seed": cfg.seed if ds.layout != "kaggle" else None,
        },
        metrics={k: m[k] for k in ("accuracy", "balanced_accuracy", "roc_auc", "n")},
        training={"C": head.hyperparameters.get("C"), "sweep": cfg.sweep, "l2_normalize": cfg.l2_normalize,
                  "class_weight": cfg.class_weight, "batch_size": cfg.batch_size,
                  "embeddings": {"extracted": train_e.n_extracted + test_e.n_extracted, "from_cache": train_e.n_cached + test_e.n_cached,
                                 "precision": "amp-fp16" if cfg.amp else "fp32", "torch_device": cfg.device,
                                 "runner": cfg.runner.name if cfg.runner is not None else "torch"}},
    )
    return TrainResult(cfg.out, head, report, len(train_e.samples), train_e.n_extracted + test_e.n_extracted,
                       train_e.n_cached + test_e.n_cached, time.perf_counter() - t0)
