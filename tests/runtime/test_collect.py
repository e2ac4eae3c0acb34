"""Collection of uncertain frames: what is saved, what is skipped, caps, and a loop that never waits."""

import json
import threading

import cv2
import numpy as np
import pytest

from tests.helpers import synthetic_rgb
from waste_edge.cli import main
from waste_edge.runtime import collection as collection_mod
from waste_edge.runtime.sinks import OutputOptions
from waste_edge.runtime.camera import CameraConfig, run_camera
from waste_edge.runtime.collection import camera_slug
from waste_edge.runtime.collector import CollectConfig, CollectError, Collector, dhash64, hamming
from waste_edge.runtime.collection import list_frames
from waste_edge.runtime.sources import open_source

pytestmark = pytest.mark.timeout(60)

SHA = "ab" * 32


def frame(label: str, seed: int, size=(160, 120)) -> np.ndarray:
    return np.ascontiguousarray(synthetic_rgb(label, seed, size)[..., ::-1])


def distinct_frames(n: int) -> list[np.ndarray]:
    """Frames whose dHashes are far apart (different random block patterns)."""
    rng = np.random.default_rng(0)
    return [np.ascontiguousarray(cv2.resize(rng.integers(0, 255, (8, 9, 3), dtype=np.uint8), (160, 120), interpolation=cv2.INTER_NEAREST)) for _ in range(n)]


def collector(folder, **kw) -> Collector:
    cfg = CollectConfig(folder, **{"every_s": 0.0, "dedup_bits": 6, **kw})
    return Collector(cfg, classes=["B", "N"], model_sha256=SHA, model_name="m.onnx", camera="rtsp://cam.local/stream")


def test_uncertain_frames_are_saved_with_a_sidecar_confident_ones_not(tmp_path):
    frames = distinct_frames(3)
    with collector(tmp_path) as col:
        assert not col.offer(frames[0], np.array([0.9, 0.1]), 0.9)  # confident: not even counted as uncertain
        assert col.offer(frames[1], np.array([0.6, 0.4]), 0.6, index=7)
        assert col.offer(frames[2], np.array([0.3, 0.7]), 0.7, index=8)
    stats = col.stats
    assert (stats.uncertain, stats.saved, stats.dropped, stats.near_duplicates) == (2, 2, 0, 0)
    saved = list_frames(tmp_path)
    assert len(saved) == 2 and stats.folder_frames == 2
    side = saved[0].sidecar
    assert side["file"] == saved[0].path.name and saved[0].path.name.endswith("-cam.local_stream.jpg")
    assert side["camera"] == "rtsp://cam.local/stream" and side["model_sha256"] == SHA and side["frame"] == 7
    assert side["probabilities"] == {"B": 0.6, "N": 0.4} and side["prediction"] == "B" and side["confidence"] == 0.6
    assert side["time"].endswith("Z") and (side["width"], side["height"]) == (160, 120)
    jpeg = cv2.imread(str(saved[0].path))
    err, swapped = (np.abs(jpeg.astype(int) - f).mean() for f in (frames[1], frames[1][..., ::-1]))
    assert jpeg.shape == frames[1].shape and err < 10 and err < swapped / 4  # the picture, channel order kept
    assert stats.bytes_written == sum(f.path.stat().st_size + f.path.with_suffix(".json").stat().st_size for f in saved)


def test_near_duplicates_of_recent_saves_are_skipped(tmp_path):
    base = frame("B", 1)
    noisy = np.clip(base.astype(int) + np.random.default_rng(1).normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    assert hamming(dhash64(base), dhash64(noisy)) <= 2
    other = distinct_frames(1)[0]
    assert hamming(dhash64(base), dhash64(other)) > 10
    with collector(tmp_path) as col:
        for f in (base, noisy, base, other):
            col.offer(f, np.array([0.5, 0.5]), 0.5)
    assert (col.stats.saved, col.stats.near_duplicates) == (2, 2)
    with collector(tmp_path) as col2:  # a restart remembers the recent hashes from the sidecars
        col2.offer(noisy, np.array([0.5, 0.5]), 0.5)
    assert (col2.stats.saved, col2.stats.near_duplicates) == (0, 1)


def test_count_cap_holds_for_the_folder_across_restarts(tmp_path):
    frames = distinct_frames(6)
    with collector(tmp_path, max_frames=3, dedup_bits=-1) as col:
        for f in frames:
            col.offer(f, np.array([0.5, 0.5]), 0.5)
    assert col.stats.saved == 3 and col.stats.capped == 3
    with collector(tmp_path, max_frames=3, dedup_bits=-1) as col2:
        assert not col2.offer(frames[0], np.array([0.5, 0.5]), 0.5)
    assert col2.stats.saved == 0 and col2.stats.capped == 1 and col2.stats.folder_frames == 3


def test_disk_cap(tmp_path):
    with collector(tmp_path, max_mb=0.001, dedup_bits=-1) as col:  # 1 kB: the first frame fills it
        for f in distinct_frames(4):
            col.offer(f, np.array([0.5, 0.5]), 0.5)
    assert col.stats.saved == 1 and col.stats.folder_bytes > 1000 and col.stats.capped == 3


def test_rate_limit(tmp_path):
    with collector(tmp_path, every_s=60.0, dedup_bits=-1) as col:
        results = [col.offer(f, np.array([0.5, 0.5]), 0.5) for f in distinct_frames(5)]
    assert results == [True, False, False, False, False]
    assert col.stats.rate_limited == 4 and col.stats.saved == 1


def test_offer_never_blocks_when_the_writer_is_stuck(tmp_path, monkeypatch):
    release, started = threading.Event(), threading.Event()
    real_save = Collector._save

    def slow_save(self, item):
        started.set()
        release.wait(120)  # a disk that hangs (NFS, a dying SD card)
        real_save(self, item)

    monkeypatch.setattr(Collector, "_save", slow_save)
    frames = distinct_frames(50)
    col = collector(tmp_path, queue_size=2, dedup_bits=-1)
    col.offer(frames[0], np.array([0.5, 0.5]), 0.5)
    assert started.wait(5)
    queued = sum(col.offer(f, np.array([0.5, 0.5]), 0.5) for f in frames[1:])
    # The queue took 2, the rest were dropped and counted. No clock needed: a blocking put would wait for the stuck
    # writer (released only below, or after 120 s), and the counts would then say more than 2 were queued.
    assert queued == 2 and col.stats.dropped == 47 and not release.is_set()
    release.set()
    stats = col.close()
    assert stats.saved == 3 and len(list_frames(tmp_path)) == 3


def test_write_errors_are_counted_not_raised(tmp_path, monkeypatch):
    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(collection_mod, "atomic_write_bytes", full_disk)
    with collector(tmp_path, dedup_bits=-1) as col:
        for f in distinct_frames(2):
            col.offer(f, np.array([0.5, 0.5]), 0.5)
    assert col.stats.write_errors == 2 and col.stats.saved == 0


def test_camera_slug():
    assert camera_slug("rtsp://user:***@cam.local:554/live") == "cam.local_554_live"
    assert camera_slug("/data/videos/bin 7.mp4") == "bin_7.mp4" and camera_slug("0") == "0" and camera_slug("///") == "camera"


def test_bad_settings_and_unwritable_folder(tmp_path):
    with pytest.raises(CollectError, match="collect-below"):
        collector(tmp_path, below=0.0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(CollectError, match="cannot write"):
        collector(tmp_path / "file" / "sub")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "bin.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (160, 120))
    for f in distinct_frames(12):
        writer.write(f)
    writer.release()
    return path


def test_camera_loop_collects_frames_without_the_overlay(clf, video, tmp_path):
    # Every frame is "uncertain". A queue for all 12: a video file feeds the loop faster than a camera, and on a loaded
    # machine the writer falls behind and drops (by design, never blocking the camera): that is tested above, not here.
    with collector(tmp_path / "c", below=1.0, queue_size=16) as col, open_source(video) as src:
        summary = run_camera(clf, src, CameraConfig(output=OutputOptions(show=False, save=tmp_path / "annotated.avi")), collector=col)
    assert summary.frames == 12 and col.stats.uncertain == 12 and col.stats.dropped == 0
    saved = list_frames(tmp_path / "c")
    assert len(saved) == col.stats.saved >= 10  # distinct frames: at most a couple judged near duplicates
    cap = cv2.VideoCapture(str(video))
    originals = [cap.read()[1] for _ in range(12)]
    cap.release()
    for s in saved:
        img = cv2.imread(str(s.path))
        src_frame = originals[s.sidecar["frame"]]
        assert np.abs(img.astype(int) - src_frame)[:30].mean() < 6  # the overlay band is not in the saved frame


def test_camera_cli_collect(model, video, tmp_path, capsys):
    out = tmp_path / "collected"
    rc = main(["camera", "--device", str(video), "--model", str(model), "--no-show", "--collect", str(out),
               "--collect-below", "1.0", "--collect-every", "0", "--collect-max", "5", "--threads", "1"])
    text = capsys.readouterr().out
    assert rc == 0
    frames = list_frames(out)
    assert len(frames) == 5 and "collected 5 frames" in text and "caps" in text and f"waste-edge adapt --model {model} --data {out} --out bgr-adapted.onnx" in text
    side = json.loads(frames[0].path.with_suffix(".json").read_text())
    from waste_edge._io import file_sha256

    assert side["model_sha256"] == file_sha256(model) and side["model"] == model.name
