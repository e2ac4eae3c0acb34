"""Bounded resources: huge images decode reduced or are skipped with a reason; every size flag is capped."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.faults.conftest import REPO, csv_rows, digest_tree, write_images
from waste_edge.data.decode import MAX_DECODE_PIXELS, ImageTooLargeError, load_rgb


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory):
    """12000 x 12000, one colour: about 445 KB on disk, 432 MB as RGB pixels."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    Image.new("RGB", (12000, 12000), (200, 30, 30)).save(path, compress_level=1)
    return path


def test_huge_png_is_skipped_from_its_header(huge_png):
    with pytest.raises(ImageTooLargeError, match="12000x12000"):
        load_rgb(huge_png)


def test_huge_jpeg_decodes_reduced(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (9000, 6000), (20, 30, 200)).save(path, quality=50)  # 54 MP > the 40 MP cap
    img = load_rgb(path)
    assert img.width * img.height <= MAX_DECODE_PIXELS
    assert img.size == (4500, 3000)


def test_predict_huge_png_costs_megabytes_not_gigabytes(huge_png, tmp_path, model):
    """A child process's peak RSS (VmHWM: its own, not inherited through fork like ru_maxrss); 2.7 GB before the cap."""
    folder = tmp_path / "in"
    write_images(folder, n=2)
    (folder / "huge.png").symlink_to(huge_png)
    out = tmp_path / "o.csv"
    code = ("import sys; from waste_edge.cli import main; rc = main(sys.argv[1:]); "
            "print([ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0], file=sys.stderr); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, "predict", folder, "--model", model, "--out", out, "--quiet"],
                       capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    peak_kb = int(r.stderr.strip().splitlines()[-1])
    assert peak_kb < 600_000, f"peak RSS {peak_kb} KB"
    rows = csv_rows(out)
    assert len(rows) == 3
    huge = [row for row in rows if row["path"].endswith("huge.png")][0]
    assert "more than the limit" in huge["error"] and huge["label"] == ""


BAD_FLAGS = [
    ["predict", "x", "--batch-size", "100000"],
    ["predict", "x", "--batch-size", "0"],
    ["predict", "x", "--threads", "100000"],
    ["predict", "x", "--workers", "-1"],
    ["camera", "--smooth", "1000000000"],
    ["camera", "--smooth", "1e9"],
    ["camera", "--stall-timeout", "nan"],
    ["camera", "--stall-timeout", "inf"],
    ["camera", "--stall-timeout", "-1"],
    ["camera", "--threshold", "nan"],
    ["demo", "--video-seconds", "1e9"],
    ["demo", "--video-seconds", "-4"],
    ["data", "check", "x", "--show", "-1"],
    ["bench", "--batches", "1,100000"],
    ["bench", "--warmup", "-1"],
    ["train", "linear", "--data", "x", "--out", "y", "--workers", "-3"],
    ["train", "linear", "--data", "x", "--out", "y", "--C", "nan"],
    ["eval", "r", "--data", "x", "--batch-size", "99999999"],
    ["export", "r", "--imgsz", "0", "224"],
    ["serve", "--port", "70000"],
    ["serve", "--max-body-mb", "inf"],
    ["serve", "--stream-fps", "0"],
]


@pytest.mark.parametrize("argv", BAD_FLAGS, ids=lambda a: " ".join(a))
def test_unbounded_flags_are_usage_errors(argv, cli, capsys):
    with pytest.raises(SystemExit) as exc:
        cli(*argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("waste-edge")


def test_inputs_untouched_by_skips(images, tmp_path, cli, model):
    before = digest_tree(images)
    (images / "empty.png").write_bytes(b"")
    (images / "text.jpg").write_text("not an image")
    status, out, err = cli("predict", images, "--model", model, "--out", tmp_path / "o.jsonl", "--quiet")
    assert status == 0
    lines = (tmp_path / "o.jsonl").read_text().splitlines()
    assert len(lines) == 7
    assert {k: v for k, v in digest_tree(images).items() if k in before} == before
