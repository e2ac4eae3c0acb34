"""The one output-path guard (waste_edge/_outputs.py): no verb writes over an input, into a folder, or twice on one file.

Each case builds its inputs, runs the verb in-process, and checks: exit 1, one `error:` line naming the
option, every input byte-for-byte unchanged, and no temporary file left behind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.faults.conftest import assert_one_line_error, digest_tree, write_images, write_video
from waste_edge._outputs import OutputPathError, check_output



@pytest.fixture
def world(tmp_path, model):
    """An input world: a video, an image folder, a run directory, a manifest, links to them."""
    root = tmp_path / "in"
    root.mkdir()
    write_video(root / "clip.mp4")
    write_images(root / "imgs", n=3)
    run = root / "run"
    run.mkdir()
    (run / "card.json").write_text('{"encoder": "x"}')
    (run / "head.json").write_text('{"classes": ["B", "N"]}')
    shutil.copy(model, root / "tiny.onnx")
    (root / "m.csv").write_text("path,label\nimgs/img0.png,B\n")
    os.symlink(root / "clip.mp4", root / "link.mp4")
    os.link(root / "clip.mp4", root / "hard.mp4")
    os.symlink(root / "m.csv", root / "m-link.csv")
    return root


CASES = {
    "camera-save-same-video": (["camera", "--device", "{r}/clip.mp4", "--model", "{r}/tiny.onnx", "--no-show", "--save", "{r}/clip.mp4"], "--save"),
    "camera-save-symlink-to-input": (["camera", "--device", "{r}/clip.mp4", "--model", "{r}/tiny.onnx", "--no-show", "--save", "{r}/link.mp4"], "is an input"),
    "camera-jsonl-hardlink-to-input": (["camera", "--device", "{r}/clip.mp4", "--model", "{r}/tiny.onnx", "--no-show", "--jsonl", "{r}/hard.mp4"], "is an input"),
    "camera-jsonl-onto-source-image": (["camera", "--device", "{r}/imgs", "--model", "{r}/tiny.onnx", "--no-show", "--jsonl", "{r}/imgs/img1.png"], "--jsonl"),
    "camera-jsonl-onto-glob-match": (["camera", "--device", "{r}/imgs/*.png", "--model", "{r}/tiny.onnx", "--no-show", "--jsonl", "{r}/imgs/img2.png"], "--jsonl"),
    "camera-save-into-source-folder": (["camera", "--device", "{r}/imgs", "--model", "{r}/tiny.onnx", "--no-show", "--save", "{r}/imgs/out.mp4"], "inside the input folder"),
    "camera-save-and-jsonl-same-file": (["camera", "--device", "{r}/clip.mp4", "--model", "{r}/tiny.onnx", "--no-show", "--save", "{o}/a.mp4", "--jsonl", "{o}/a.mp4"], "each output"),
    "camera-jsonl-onto-model": (["camera", "--device", "{r}/clip.mp4", "--model", "{r}/tiny.onnx", "--no-show", "--jsonl", "{r}/tiny.onnx"], "is an input"),
    "camera-save-is-folder": (["camera", "--device", "{r}/clip.mp4", "--model", "{r}/tiny.onnx", "--no-show", "--save", "{r}/imgs"], "is a folder"),
    "predict-out-is-folder": (["predict", "{r}/imgs", "--model", "{r}/tiny.onnx", "--out", "{r}/run"], "is a folder"),
    "predict-out-image-in-source": (["predict", "{r}/imgs", "--model", "{r}/tiny.onnx", "--out", "{r}/imgs/x.png"], "inside the input folder"),
    "predict-out-is-named-input": (["predict", "{r}/m.csv", "{r}/imgs", "--model", "{r}/tiny.onnx", "--out", "{r}/m.csv"], "is an input"),
    "predict-out-symlink-to-input": (["predict", "{r}/m.csv", "--model", "{r}/tiny.onnx", "--out", "{r}/m-link.csv"], "is an input"),
    "data-split-out-is-manifest": (["data", "split", "{r}/m.csv", "--out", "{r}/m.csv"], "is an input"),
    "data-split-out-symlink-to-manifest": (["data", "split", "{r}/m.csv", "--out", "{r}/m-link.csv"], "is an input"),
    "data-split-out-is-folder": (["data", "split", "{r}/imgs", "--out", "{r}/run"], "is a folder"),
    "data-check-json-is-folder": (["data", "check", "{r}/imgs", "--json", "{r}/run"], "is a folder"),
    "parity-json-onto-model": (["parity", "{r}/tiny.onnx", "--run", "{r}/run", "--data", "{r}/imgs", "--json", "{r}/tiny.onnx"], "is an input"),
    "parity-json-is-folder": (["parity", "{r}/tiny.onnx", "--run", "{r}/run", "--data", "{r}/imgs", "--json", "{r}/run"], "is a folder"),
    "export-out-onto-head": (["export", "{r}/run", "--out", "{r}/run/head.json"], "inside the input folder"),
    "parity-json-onto-run-metrics": (["parity", "{r}/tiny.onnx", "--run", "{r}/run", "--data", "{r}/imgs", "--json", "{r}/run/metrics.json"], "inside the input folder"),
    "export-out-is-folder": (["export", "{r}/run", "--out", "{r}/imgs"], "is a folder"),
    "eval-out-is-file": (["eval", "{r}/run", "--data", "{r}/imgs", "--out", "{r}/m.csv"], "existing file"),
    "eval-out-is-run-folder": (["eval", "{r}/run", "--data", "{r}/imgs", "--out", "{r}/run"], "input folder"),
    "train-out-is-data-folder": (["train", "linear", "--data", "{r}/imgs", "--out", "{r}/imgs"], "input folder"),
    "demo-out-is-file": (["demo", "--out", "{r}/clip.mp4"], "existing file"),
    "bench-json-onto-model": (["bench", "--model", "{r}/tiny.onnx", "--json", "{r}/tiny.onnx"], "is an input"),
    "bench-json-and-md-same": (["bench", "--model", "{r}/tiny.onnx", "--json", "{o}/r.txt", "--md", "{o}/r.txt"], "each output"),
    "bench-plot-is-folder": (["bench", "--model", "{r}/tiny.onnx", "--plot", "{r}/imgs"], "is a folder"),
    "serve-jsonl-onto-source": (["serve", "--device", "door={r}/clip.mp4", "--jsonl", "{r}/clip.mp4"], "is an input"),
    "serve-save-is-file": (["serve", "--device", "{r}/clip.mp4", "--save-dir", "{r}/m.csv"], "existing file"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_output_guard_refuses(case, world, tmp_path, cli):
    argv, needle = CASES[case]
    (tmp_path / "o").mkdir()
    before = digest_tree(world)
    status, _out, err = cli(*[a.format(r=world, o=tmp_path / "o") for a in argv])
    assert status == 1, err
    assert_one_line_error(err, needle)
    assert digest_tree(world) == before
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_python_api_predict_refuses_folder(world, clf_tiny, tmp_path):
    from waste_edge.runtime.predict import run_predict

    with pytest.raises(OutputPathError):
        run_predict(clf_tiny, [world / "imgs"], world / "run", progress=False)


@pytest.mark.parametrize("sink", ["JsonlSink", "VideoSink"])
def test_python_api_sinks_refuse_folder(sink, tmp_path):
    from waste_edge.runtime import sinks

    with pytest.raises(OutputPathError):
        getattr(sinks, sink)(tmp_path)


def test_guard_allows_ordinary_outputs(world, tmp_path):
    assert check_output(tmp_path / "new.csv", [world / "imgs", world / "clip.mp4"]) == tmp_path / "new.csv"
    assert check_output("-", [world]) is None
    assert check_output(world / "imgs" / "report.jsonl", [world / "imgs"]) is not None  # not an input suffix
