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


# -- decompression bombs: read from the header, decoded reduced or refused as too large, never called corrupt ----


def _peak_rss_kb(argv: list, timeout: float = 180) -> tuple[subprocess.CompletedProcess, int]:
    """Run the CLI in a fresh process (cwd outside the repository, so the code under test is what is imported);
    its peak RSS from `resource.getrusage(RUSAGE_CHILDREN)` of a wrapper process that runs only it."""
    code = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)")
    r = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "waste_edge.cli", *map(str, argv)], capture_output=True, text=True,
                       timeout=timeout, cwd="/", env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    peak = int(r.stderr.strip().splitlines()[-1].split()[1])
    return r, peak


@pytest.fixture(scope="module")
def jpeg_16k(tmp_path_factory):
    """A valid 16000 x 16000 JPEG (256 MP, 3 MB): Pillow's own bomb check refused it in `open`, before any draft."""
    path = tmp_path_factory.mktemp("j16k") / "big.jpg"
    Image.new("L", (16000, 16000), 90).save(path, quality=50)
    return path


def test_valid_16000_jpeg_decodes_at_a_quarter_not_corrupt(jpeg_16k):
    img = load_rgb(jpeg_16k)
    assert img.size == (4000, 4000) and img.getpixel((100, 100))[0] in range(85, 96)


def test_predict_on_the_16000_jpeg_stays_small(jpeg_16k, tmp_path):
    out = tmp_path / "o.csv"
    r, peak = _peak_rss_kb(["predict", jpeg_16k, "--out", out, "--quiet"])
    assert r.returncode == 0, r.stderr
    (row,) = csv_rows(out)
    assert row["label"] and not row["error"]
    assert peak < 700_000, f"peak RSS {peak} KB"


def _png_header_only(path, w: int, h: int):
    """A PNG whose header says w x h (and a token IDAT): what a decompression bomb looks like before decoding."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [15000, 100000])
def test_huge_png_headers_are_too_large_not_corrupt(side, tmp_path):
    from waste_edge.data.decode import decode_rgb_bytes
    from waste_edge.errors import TooLargeError

    path = _png_header_only(tmp_path / "bomb.png", side, side)
    for call in (lambda: load_rgb(path), lambda: decode_rgb_bytes(path.read_bytes(), max_pixels=40_000_000)):
        with pytest.raises(ImageTooLargeError) as info:
            call()
        assert isinstance(info.value, TooLargeError) and "corrupt" not in str(info.value)


def test_max_pixels_flag_bounds_what_predict_decodes(tmp_path, cli, model):
    write_images(tmp_path / "i", n=1, size=100)  # 10,000 pixels
    out = tmp_path / "o.csv"
    status, _o, err = cli("predict", tmp_path / "i", "--model", model, "--out", out, "--max-pixels", "9999", "--quiet")
    assert status == 1  # no row could be classified
    (row,) = csv_rows(out)
    assert "more than the limit of 9999" in row["error"]


# -- frames shrink to the model's input before they are batched: memory does not grow with the resolution ------


@pytest.fixture(scope="module")
def big_photos(tmp_path_factory):
    """Four 6000 x 4000 JPEGs (24 MP each: 72 MB decoded)."""
    import shutil

    folder = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)).resize((6000, 4000), Image.Resampling.BILINEAR)
    img.save(folder / "p0.jpg", quality=85)
    for i in range(1, 4):
        shutil.copy(folder / "p0.jpg", folder / f"p{i}.jpg")
    return folder


def _default_model():
    from waste_edge.runtime.model_path import default_model_path

    path = default_model_path()
    if path is None:
        pytest.skip("no embedded default model in this checkout")
    return path


def test_predict_memory_does_not_grow_with_batch_of_big_photos(big_photos, tmp_path):
    """3.8 GB at --batch-size 8 before (1.1 GB at 1); each photo is now cropped to what the model takes as it is decoded."""
    _default_model()
    peaks = {}
    for batch in (1, 4):
        out = tmp_path / f"o{batch}.csv"
        r, peaks[batch] = _peak_rss_kb(["predict", big_photos, "--out", out, "--batch-size", batch, "--quiet"])
        assert r.returncode == 0, r.stderr
        assert len(csv_rows(out)) == 4
    assert peaks[4] < 900_000 and peaks[4] < peaks[1] + 200_000, peaks


def test_predict_on_a_4000x3000_video_stays_small(tmp_path):
    """3.4 GB before: 16 full frames per batch plus the graph's float copies of them."""
    import cv2

    _default_model()
    path = tmp_path / "v.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (4000, 3000))
    frame = cv2.resize(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8), (4000, 3000))
    for i in range(16):
        writer.write(np.roll(frame, 20 * i, axis=1))
    writer.release()
    out = tmp_path / "o.csv"
    r, peak = _peak_rss_kb(["predict", path, "--out", out, "--quiet"])
    assert r.returncode == 0, r.stderr
    assert len(csv_rows(out)) == 16
    assert peak < 900_000, f"peak RSS {peak} KB"


def test_shrunk_frames_get_the_answer_of_the_full_frame():
    """The default model (box_crop: the graph is bit-exact with PIL): the same probabilities with and without the
    pre-shrink, for photos, odd sizes, portrait frames and frames smaller than the model's input."""
    from waste_edge.runtime.classifier import Classifier

    rng = np.random.default_rng(3)
    with Classifier(_default_model(), "cpu", threads=1) as clf:
        for h, w in [(3000, 4000), (4000, 2250), (481, 641), (999, 333), (224, 224), (180, 200)]:
            frame = np.ascontiguousarray(Image.fromarray(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)).resize((w, h)))
            small = clf.model_sized(frame)
            assert small.shape[0] * small.shape[1] <= max(224 * 224, h * w)
            np.testing.assert_allclose(clf.predict_proba(small, "RGB"), clf.predict_proba(frame, "RGB"), atol=1e-6)
            np.testing.assert_array_equal(clf.model_sized(Image.fromarray(frame)), small)  # the PIL path: the same pixels


@pytest.mark.parametrize("mode", ["box_crop", "shortest"])
def test_preprocessing_graph_on_the_shrunk_frame_is_its_own_geometry(mode):
    """Why the shrink is safe: the fused graph's preprocessing on the shrunk frame is the identity, so it sees the PIL
    reference crop. box_crop is bit-exact with the graph on the full frame; shortest (CLIP's antialiased bicubic) is
    within the graph's documented tolerance to PIL (1 grey level; 2 on pure noise)."""
    pytest.importorskip("onnx")
    import onnxruntime as ort

    from waste_edge.data.geometry import PreprocessSpec, resize_crop
    from waste_edge.export.preprocess_graph import PIXELS, build_preprocess_model
    from waste_edge.runtime.classifier import _shrinkable_spec

    spec = PreprocessSpec(224, mode, "bilinear" if mode == "box_crop" else "bicubic", True, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert _shrinkable_spec(spec.to_dict()) == spec
    sess = ort.InferenceSession(build_preprocess_model(spec, "RGB").SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    for h, w in [(2000, 3000), (1500, 1000), (481, 641), (700, 225)]:
        frame = np.ascontiguousarray(Image.fromarray(rng.integers(0, 256, (h // 6 + 1, w // 6 + 1, 3), dtype=np.uint8)).resize((w, h)))
        small = np.asarray(resize_crop(Image.fromarray(frame), spec))
        full_px, small_px = (sess.run([PIXELS], {"image": f[None]})[0][0] for f in (frame, small))
        np.testing.assert_array_equal(small_px, small.transpose(2, 0, 1).astype(np.float32))  # identity on the shrunk frame
        diff = np.abs(full_px - small_px)
        assert diff.max() == 0 if mode == "box_crop" else diff.max() <= 1.0 + 1e-3, (h, w, diff.max())
