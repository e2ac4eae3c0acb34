import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import save_image, synthetic_rgb
from tests.runtime.tiny_model import expected_probs
from waste_edge.cli import main
from waste_edge.runtime.predict import expand_inputs, run_predict

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def inputs(tmp_path):
    """Images in nested folders (odd names, sizes, a corrupt and an empty file), a note, and a 6-frame video."""
    root = tmp_path / "in"
    save_image(root / "B" / "b 1 (é).jpg", synthetic_rgb("B", 1), quality=95)
    save_image(root / "B" / "deep" / "b2.png", synthetic_rgb("B", 2, size=(40, 30)))
    save_image(root / "N" / "n1.png", synthetic_rgb("N", 3))
    (root / "N" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "N" / "empty.png").write_bytes(b"")
    (root / "README.txt").write_text("not an image; ignored in folders")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i, label in enumerate("BBNNBN"):
        writer.write(np.ascontiguousarray(synthetic_rgb(label, i)[..., ::-1]))
    writer.release()
    return root, video


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_expand_inputs(inputs, tmp_path):
    root, video = inputs
    items = expand_inputs([root, video, tmp_path / "missing.jpg", str(root / "B" / "*.jpg"), str(tmp_path / "*.none")])
    got = [(it.path.name, it.kind, it.error) for it in items]
    assert got == [
        ("b 1 (é).jpg", "image", ""),
        ("b2.png", "image", ""),
        ("corrupt.jpg", "image", ""),
        ("empty.png", "image", ""),
        ("n1.png", "image", ""),
        ("clip.avi", "video", ""),
        ("missing.jpg", "error", "file not found"),
        ("*.none", "error", "no image or video files match this pattern"),
    ]  # the glob's match was already listed from the folder: no duplicate row


def test_predict_csv_rows_for_images_videos_and_errors(clf, inputs, tmp_path):
    root, video = inputs
    out = tmp_path / "pred.csv"
    summary = run_predict(clf, [root, video, tmp_path / "missing.jpg"], out, batch_size=2, progress=False)
    rows = read_csv(out)
    assert list(rows[0]) == ["path", "frame", "label", "confidence", "p_B", "p_N", "error"]
    by_name = {(Path(r["path"]).name, r["frame"]): r for r in rows}
    assert len(rows) == 5 + 6 + 1  # every input is a row, errors included
    assert by_name[("b 1 (é).jpg", "")]["label"] == "B"
    assert by_name[("b2.png", "")]["label"] == "B"
    assert by_name[("n1.png", "")]["label"] == "N"
    assert "corrupt or truncated" in by_name[("corrupt.jpg", "")]["error"] or "not an image" in by_name[("corrupt.jpg", "")]["error"]
    assert by_name[("corrupt.jpg", "")]["label"] == ""
    assert "empty file" in by_name[("empty.png", "")]["error"]
    assert by_name[("missing.jpg", "")]["error"] == "file not found"
    video_rows = [r for r in rows if r["frame"] != ""]
    assert [int(r["frame"]) for r in video_rows] == list(range(6))
    assert "".join(r["label"] for r in video_rows) == "BBNNBN"
    exact = synthetic_rgb("N", 3)  # PNG is lossless: the probabilities are the model's on the exact pixels
    assert float(by_name[("n1.png", "")]["p_N"]) == pytest.approx(expected_probs(exact)[1], abs=1e-5)
    for r in rows:
        if not r["error"]:
            assert float(r["confidence"]) == pytest.approx(max(float(r["p_B"]), float(r["p_N"])), abs=1e-6)
    assert summary.rows == 12 and summary.errors == 3 and summary.predictions == 9
    assert summary.images == 5 and summary.videos == 1 and summary.video_frames == 6
    assert "3 errors" in summary.summary()


def test_predict_jsonl(clf, inputs, tmp_path):
    root, video = inputs
    out = tmp_path / "pred.jsonl"
    run_predict(clf, [video, root / "N"], out, batch_size=4, progress=False)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 6 + 3
    assert set(rows[0]) == {"path", "frame", "label", "confidence", "p_B", "p_N"}
    image_rows = rows[6:]
    assert set(image_rows[-1]) == {"path", "label", "confidence", "p_B", "p_N"}  # n1.png: no frame key
    assert {Path(r["path"]).name for r in image_rows if "error" in r} == {"corrupt.jpg", "empty.png"}
    assert all(set(r) == {"path", "error"} for r in image_rows if "error" in r)


def test_predict_matches_classifier_on_decoded_images(clf, inputs, tmp_path):
    """predict decodes like training does (load_rgb_array, RGB) and flips for a BGR model: same answer."""
    from waste_edge.data.decode import load_rgb_array

    root, _ = inputs
    out = tmp_path / "p.csv"
    run_predict(clf, [root / "B"], out, progress=False)
    for row in read_csv(out):
        probs = clf.predict_proba(load_rgb_array(row["path"]), "RGB")[0]
        assert float(row["p_B"]) == pytest.approx(float(probs[0]), abs=1e-6)


def test_rows_are_flushed_batch_by_batch(clf, tmp_path):
    """A run killed half-way keeps the rows of the batches it finished."""
    for i in range(6):
        save_image(tmp_path / "imgs" / f"{i}.png", synthetic_rgb("B", i))
    out = tmp_path / "p.csv"

    class Killed(Exception):
        pass

    calls = {"n": 0}

    class DiesOnSecondBatch:
        classes = clf.classes

        def predict_proba(self, frames, order):
            calls["n"] += 1
            if calls["n"] == 2:
                assert len(read_csv(out)) == 2  # first batch already on disk before the second runs
                raise KeyboardInterrupt
            return clf.predict_proba(frames, order)

    with pytest.raises(KeyboardInterrupt):
        run_predict(DiesOnSecondBatch(), [tmp_path / "imgs"], out, batch_size=2, progress=False)
    assert [Path(r["path"]).name for r in read_csv(out)] == ["0.png", "1.png"]


def test_inference_failure_costs_one_row_not_the_run(clf, tmp_path):
    for i in range(3):
        save_image(tmp_path / f"{i}.png", synthetic_rgb("N", i))

    class FailsOnOneFrame:
        classes = clf.classes

        def predict_proba(self, frames, order):
            if isinstance(frames, list) or frames.ndim == 4:
                raise RuntimeError("batch failed")
            if frames[0, 0, 0] == synthetic_rgb("N", 1)[0, 0, 0] and np.array_equal(frames, synthetic_rgb("N", 1)):
                raise RuntimeError("onnxruntime says no")
            return clf.predict_proba(frames, order)

    out = tmp_path / "p.csv"
    summary = run_predict(FailsOnOneFrame(), [tmp_path], out, progress=False)
    rows = read_csv(out)
    assert [r["label"] for r in rows] == ["N", "", "N"]
    assert rows[1]["error"] == "inference failed: onnxruntime says no"
    assert summary.errors == 1


def test_unknown_output_suffix(clf, tmp_path):
    from waste_edge.errors import WasteEdgeError

    with pytest.raises(WasteEdgeError, match=".csv or .jsonl"):
        run_predict(clf, [tmp_path], tmp_path / "out.xlsx", progress=False)


def test_predict_cli(model, inputs, tmp_path, capsys):
    root, video = inputs
    out = tmp_path / "cli.csv"
    rc = main(["predict", str(root), str(video), "--model", str(model), "--out", str(out), "--batch-size", "3", "--threads", "1"])
    captured = capsys.readouterr()
    assert rc == 0
    assert len(read_csv(out)) == 11
    assert "11 rows (9 predictions, 2 errors)" in captured.out
    assert "predict" in captured.err  # tqdm progress bar on stderr


def test_predict_cli_csv_to_stdout(model, inputs, capsys):
    root, _ = inputs
    rc = main(["predict", str(root / "N" / "n1.png"), "--model", str(model), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0
    lines = out.strip().splitlines()
    assert lines[0] == "path,frame,label,confidence,p_B,p_N,error" and len(lines) == 2
    assert ",N," in lines[1]
    assert "1 rows" in err


def test_predict_cli_nothing_classifiable_exits_1(model, tmp_path, capsys):
    rc = main(["predict", str(tmp_path / "missing.jpg"), "--model", str(model), "--quiet", "--out", str(tmp_path / "o.csv")])
    _, err = capsys.readouterr()
    assert rc == 1 and "no input could be classified" in err
    assert read_csv(tmp_path / "o.csv")[0]["error"] == "file not found"


def test_predict_cli_defaults_to_the_embedded_model(tmp_path, capsys):
    from tests.helpers import save_image, synthetic_rgb

    save_image(tmp_path / "in" / "a.png", synthetic_rgb("B", 1, (320, 240)))
    rc = main(["predict", str(tmp_path / "in"), "--out", str(tmp_path / "p.csv"), "--quiet"])
    _, err = capsys.readouterr()
    assert rc == 0 and "default.onnx" in err
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0].startswith("path,") and "p_B" in rows[0] and len(rows) == 2
