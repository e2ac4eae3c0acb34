"""End to end: `waste-edge train linear` and `eval` through the CLI, on generated data."""

import json

import pytest

from tests.helpers import make_kaggle_dataset, register_tiny_clip
from waste_edge.cli import main
from waste_edge.train.card import REPORT_FILES
from waste_edge.train.runs import LinearRun, open_run


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = make_kaggle_dataset(tmp_path_factory.mktemp("data") / "kaggle set (v1)", n_per_class=6)
    (root / "TEST" / "B" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


@pytest.mark.parametrize("encoder", ["effnet-lite0/none", "clip:TINY/none"])
def test_train_linear_then_eval(tmp_path, dataset, encoder, capsys):
    if encoder.startswith("clip:TINY"):
        encoder = encoder.replace("TINY", register_tiny_clip())
    run = tmp_path / "run"
    cache = tmp_path / "cache"
    args = ["train", "linear", "--data", str(dataset), "--encoder", encoder, "--out", str(run), "--cache", str(cache), "--batch-size", "8"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out
    assert "train: 24 extracted, 0 reused from the cache" in out and "test: 12 extracted, 0 reused from the cache, 1 unreadable" in out
    for name in ("card.json", *LinearRun.files, *REPORT_FILES):
        assert (run / name).is_file(), name
    card = json.loads((run / "card.json").read_text())
    assert card["encoder"]["id"] == encoder and card["classes"] == ["B", "N"]
    assert card["display_names"] == ["biodegradable", "non-biodegradable"]
    assert card["data"]["counts"] == {"train": {"B": 12, "N": 12}, "test": {"B": 7, "N": 6}}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n"] == 12 and metrics["n_unreadable"] == 1 and metrics["unreadable"][0]["path"].endswith("broken.jpg")
    assert open_run(run).head.classes == ["B", "N"]

    # A second identical run extracts nothing and says so.
    assert main(args[:-4] + ["--out", str(tmp_path / "run2"), "--cache", str(cache)]) == 0
    assert "reused from the cache (nothing extracted)" in capsys.readouterr().out

    assert main(["eval", str(run), "--data", str(dataset), "--split", "TEST", "--out", str(tmp_path / "ev"), "--cache", str(cache)]) == 0
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert ev["accuracy"] == metrics["accuracy"] and ev["n"] == 12


def test_cli_errors_are_one_line(tmp_path, dataset, capsys):
    assert main(["train", "linear", "--data", str(tmp_path / "missing"), "--encoder", "effnet-lite0/none", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: dataset not found") and err.count("\n") == 1
    assert main(["train", "linear", "--data", str(dataset), "--encoder", "nope", "--out", str(tmp_path / "r")]) == 1
    assert "unknown encoder" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--data", str(dataset)]) == 1
    assert "not a run directory" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["train", "linear", "--data", str(dataset)])
    assert e.value.code == 2


@pytest.mark.slow
def test_lite0_on_waste_sample_reaches_study_grade_accuracy(tmp_path, waste_sample, capsys):
    """Acceptance of the foundation issue: real ImageNet Lite0 features + the study's head, TEST >= 0.97."""
    run = tmp_path / "lite0"
    args = ["train", "linear", "--data", str(waste_sample), "--encoder", "effnet-lite0", "--out", str(run), "--torch-threads", "2"]
    assert main(args) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.97 and metrics["n"] == 412
    assert all((run / f).is_file() for f in ("card.json", *LinearRun.files, *REPORT_FILES))
