"""The run model: `open_run` picks the kind from the card, validates card and model files, and says what is wrong
in one line naming the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from waste_edge.train.card import RunError
from waste_edge.train.encoders import LITE0_SPEC
from waste_edge.train.head import LinearHead
from waste_edge.train.runs import RUN_KINDS, KerasRun, LinearRun, open_run

DIM = 8


def encoder_card(encoder_id: str = "effnet-lite0/none", sha256: str | None = None, dim: int = DIM) -> dict:
    return {"id": encoder_id, "family": "effnet", "dim": dim, "weights": {"source": "test", "sha256": sha256}, "preprocess": LITE0_SPEC.to_dict()}


def head(dim: int = DIM) -> LinearHead:
    return LinearHead(["B", "N"], np.random.default_rng(0).normal(size=(1, dim)), np.zeros(1), False, {"C": 0.316})


def linear_run(path: Path, **card) -> Path:
    LinearRun.create(path, encoder_card(**card), head(), metrics={"accuracy": 0.5, "roc_auc": None, "n": 12})
    return path


def edit(path: Path, name: str, change) -> None:
    doc = json.loads((path / name).read_text())
    change(doc)
    (path / name).write_text(json.dumps(doc))


def test_open_run_picks_the_kind_and_validates(tmp_path):
    run = open_run(linear_run(tmp_path / "r"))
    assert isinstance(run, LinearRun) and run.kind == "linear" and run.classes == ["B", "N"]
    assert run.display_names == ["biodegradable", "non-biodegradable"]
    assert run.head_sha256 == run.head.sha256() and run.encoder_dim == run.head.dim == DIM
    assert RUN_KINDS == {"linear": LinearRun, "keras": KerasRun}


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("card.json", lambda d: d.update(classes=["B", "B"]), "card.json: field 'classes' must name distinct classes"),
        ("card.json", lambda d: d["encoder"].update(dim="8"), "card.json: field 'encoder.dim' must be an integer"),
        ("card.json", lambda d: d["encoder"].update(dim=16), "head.json expects 8-d features but the card's encoder"),
        ("card.json", lambda d: d["metrics"].update(accuracy=float("nan")), "field 'metrics.accuracy' must be a finite number"),
        ("card.json", lambda d: d.pop("preprocess"), "card.json: field 'preprocess' is missing"),
        ("card.json", lambda d: d["preprocess"].update(resize_mode="stretch"), "field 'preprocess' is not a preprocessing spec"),
        ("card.json", lambda d: d.update(display_names=["b"]), "field 'display_names' must be a list of at least 2"),
        ("card.json", lambda d: d.update(kind="svm"), "field 'kind' must be one of linear, keras, got 'svm'"),
        ("card.json", lambda d: d.update(version=99), "card version 99 is not one this toolkit reads"),
        ("card.json", lambda d: d["head"].update(sha256="f" * 64), "head.json does not match the card's head sha256"),
        ("head.json", lambda d: d["coef"][0].__setitem__(0, float("inf")), "head.json: invalid head (non-finite weights)"),
        ("head.json", lambda d: d.update(classes=["B", "X"]), "head.json: invalid head (sha256 does not match"),
    ],
)
def test_broken_runs_are_one_line_errors_naming_file_and_field(tmp_path, name, change, message):
    path = linear_run(tmp_path / "r")
    edit(path, name, change)
    with pytest.raises(RunError) as err:
        open_run(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_old_spelling_of_persisted_keys_still_reads(tmp_path):
    path = linear_run(tmp_path / "r")
    edit(path, "card.json", lambda d: d["preprocess"].update(normalisation="folded"))
    assert open_run(path).card["preprocess"]["normalization"] == "folded"


def test_encoder_weights_inside_the_run_directory_resolve_wherever_it_lives(tmp_path, monkeypatch):
    """A run may ship its own encoder weights (fine-tuning): an id relative to the run directory still loads."""
    import torch

    from waste_edge._io import file_sha256
    from waste_edge.train.effnet_lite import EfficientNetLite
    from waste_edge.train.encoders import EncoderError

    folder = tmp_path / "somewhere" / "run"
    folder.mkdir(parents=True)
    torch.save(EfficientNetLite().state_dict(), folder / "encoder.pth")
    LinearRun.create(folder, encoder_card("effnet-lite0/encoder.pth", file_sha256(folder / "encoder.pth"), 1280), head(1280))
    monkeypatch.chdir(tmp_path)  # not the run directory: the relative id must resolve against the run, not the CWD
    enc = open_run(folder).encoder()
    assert enc.id == "effnet-lite0/encoder.pth" and enc.weights["sha256"] == file_sha256(folder / "encoder.pth")
    torch.manual_seed(1)
    torch.save(EfficientNetLite().state_dict(), folder / "encoder.pth")  # other weights than the head was trained on
    with pytest.raises(EncoderError, match="differ from the run's"):
        open_run(folder).encoder()
