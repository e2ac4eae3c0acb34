"""Fixtures for the benchmark tests: a tiny run directory (the reference) and tiny fused models exported "from" it.

The run uses random-weight EfficientNet-Lite0 (`effnet-lite0/none`, seeded, so the reference rebuilds the same
weights, also in the peak-RSS child process) and a head fitted on random features. The fused models are the
runtime's tiny onnx.helper graphs, stamped with that run's encoder id and head sha256 so the harness pairs
them with the reference as it would pair a real export.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.runtime.tiny_model import make_fused_model
from waste_edge.data.labels import display_names
from waste_edge.runtime.metadata import ModelMetadata


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    from waste_edge.train.encoders import create_encoder
    from waste_edge.train.head import fit_head
    from waste_edge.train.runs import LinearRun

    out = tmp_path_factory.mktemp("bench-run") / "lite0-random"
    enc = create_encoder("effnet-lite0/none")
    rng = np.random.default_rng(0)
    head = fit_head(rng.normal(size=(16, enc.dim)), ["B", "N"] * 8)
    LinearRun.create(out, enc.card(), head, display_names(head.classes))
    return out


def stamp_model(path: Path, run_dir: Path, variant: str) -> Path:
    """A tiny fused model whose metadata says it was exported from `run_dir` as `variant`."""
    from waste_edge.train.runs import open_run

    run = open_run(run_dir)
    make_fused_model(path, metadata=False, channel_order="BGR")
    model = onnx.load(str(path))
    meta = ModelMetadata(classes=run.classes, display_names=display_names(run.classes), channel_order="BGR",
                         preprocess={"kind": "mean-colour"}, encoder=run.encoder_id, head_sha256=run.head_sha256,
                         toolkit_version="0.1.0", variant=variant)
    onnx.helper.set_model_props(model, meta.to_props())
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, tiny_run) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bench-models")
    return {v: stamp_model(folder / f"tiny-{v}.onnx", tiny_run, v) for v in ("fp32", "int8")}
