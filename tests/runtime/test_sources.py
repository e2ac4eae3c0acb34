import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import save_image, synthetic_rgb
from tests.runtime.fakes import FakeCapture, ScriptedCamera
from waste_edge.runtime.sources import SourceError, open_source, parse_spec, redact_url

pytestmark = pytest.mark.timeout(60)


def write_video(path: Path, n: int = 20, size=(64, 48), fps: float = 25.0) -> Path:
    """A video written by OpenCV from generated frames: frame i has brightness 10 * i (stands in for a camera)."""
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, fps, size)
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), 10 * i, dtype=np.uint8))
    writer.release()
    return path


# -- spec parsing ----------------------------------------------------------------------------------------------


def test_parse_spec_kinds(tmp_path):
    assert parse_spec(0) == ("camera", 0)
    assert parse_spec("2") == ("camera", 2)
    assert parse_spec("/dev/video1") == ("camera", "/dev/video1")
    assert parse_spec("rtsp://cam.local:554/stream")[0] == "url"
    assert parse_spec("http://cam.local/mjpg")[0] == "url"
    assert parse_spec("v4l2src ! videoconvert ! appsink")[0] == "gstreamer"
    video = write_video(tmp_path / "clip.avi", n=3)
    assert parse_spec(str(video)) == ("video", str(video))
    a = save_image(tmp_path / "imgs" / "b" / "a.png", synthetic_rgb("B", 1))
    b = save_image(tmp_path / "imgs" / "c.jpg", synthetic_rgb("N", 2))
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    kind, files = parse_spec(tmp_path / "imgs")
    assert kind == "images" and files == sorted([a, b])  # recursive, images only, sorted
    kind, files = parse_spec(str(tmp_path / "imgs" / "**" / "*.png"))
    assert kind == "images" and files == [a]
    assert parse_spec(str(a)) == ("images", [a])


def test_parse_spec_errors(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        parse_spec(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        parse_spec(tmp_path / "empty")
    with pytest.raises(SourceError, match="no image files match"):
        parse_spec(str(tmp_path / "*.jpg"))
    with pytest.raises(SourceError, match="empty source"):
        parse_spec("  ")


def test_redact_url_hides_password():
    assert redact_url("rtsp://admin:secret@10.0.0.2:554/s1") == "rtsp://admin:***@10.0.0.2:554/s1"
    assert redact_url("rtsp://10.0.0.2/s1") == "rtsp://10.0.0.2/s1"


def test_unopenable_camera_is_a_clear_error():
    with pytest.raises(SourceError, match="cannot open camera 7.*connected"):
        open_source(7, capture_factory=lambda: FakeCapture(opened=False))


# -- files: no drops -------------------------------------------------------------------------------------------


def test_video_file_reads_every_frame_in_order_without_drops(tmp_path):
    video = write_video(tmp_path / "clip.avi", n=20)
    with open_source(video, queue_size=2) as src:
        assert not src.live and src.kind == "video" and src.channel_order == "BGR"
        assert src.frame_count == 20 and src.fps == pytest.approx(25.0)
        means, indices = [], []
        for frame, info in src:
            time.sleep(0.005)  # a slow consumer: a file source must wait, not drop
            assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
            means.append(float(frame.mean()))
            indices.append(info.index)
            assert info.dropped == 0
        stats = src.stats()
    assert indices == list(range(20))
    assert np.allclose(means, [10 * i for i in range(20)], atol=4)
    assert stats.frames == 20 and stats.dropped == 0 and stats.reconnects == 0


def test_image_folder_source_is_rgb_and_skips_undecodable_files(tmp_path):
    save_image(tmp_path / "a.png", synthetic_rgb("B", 1))
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    save_image(tmp_path / "sub" / "c.png", synthetic_rgb("N", 2, size=(32, 40)))
    with open_source(tmp_path) as src:
        assert src.channel_order == "RGB" and not src.live
        got = [(info.path, frame.copy()) for frame, info in src]
        stats = src.stats()
    assert [Path(p).name for p, _ in got] == ["a.png", "c.png"]
    assert np.array_equal(got[0][1], synthetic_rgb("B", 1))  # RGB, exactly the decoded pixels
    assert got[1][1].shape == (40, 32, 3)
    assert stats.skipped_files == 1 and stats.frames == 2


def test_glob_source(tmp_path):
    for i in range(3):
        save_image(tmp_path / f"x{i}.png", synthetic_rgb("B", i))
    save_image(tmp_path / "y.png", synthetic_rgb("N", 9))
    with open_source(str(tmp_path / "x*.png")) as src:
        names = [Path(info.path).name for _, info in src]
    assert names == ["x0.png", "x1.png", "x2.png"]


def test_held_frame_is_not_overwritten_by_the_reader():
    """Buffers are reused, but never the one the consumer holds (nor one still queued)."""
    for live in (True, False):
        with open_source(0, capture_factory=lambda: FakeCapture(delay=0.001), live=live) as src:
            for _ in range(5):
                frame, info = src.read()
                marker = int(frame[0, 0, 0])
                time.sleep(0.03)  # the reader keeps decoding into the other buffers meanwhile
                assert int(frame[0, 0, 0]) == marker == info.index % 256
                assert (frame[0, :, 0] == marker).all()


# -- live sources: newest frame, drops, failures ----------------------------------------------------------------


def test_live_source_keeps_newest_frame_and_counts_drops():
    with open_source(0, capture_factory=lambda: FakeCapture(delay=0.002)) as src:
        assert src.live
        prev = None
        reported = 0
        for _ in range(8):
            frame, info = src.read()
            if prev is not None:
                assert info.index > prev
                assert info.dropped == info.index - prev - 1  # gaps in the numbering are exactly the drops
            reported += info.dropped
            prev = info.index
            time.sleep(0.03)  # slower than the camera
        stats = src.stats()
    assert reported > 0
    assert stats.dropped >= reported


@pytest.mark.timeout(30)
def test_live_source_survives_empty_reads_freeze_and_failed_reopens():
    unfreeze = threading.Event()
    first = FakeCapture(["frame"] * 4 + ["none"] * 3)  # 3 empty reads in a row -> reopen
    second = FakeCapture(["frame"] * 3 + ["freeze"], unfreeze=unfreeze)  # blocks -> stall -> reopen
    dead = FakeCapture(opened=False)  # unplugged: the reopen fails, backoff, retry
    third = FakeCapture()
    cam = ScriptedCamera([first, second, dead, third])
    src = open_source("0", capture_factory=cam, stall_timeout=0.3, max_failed_reads=3, backoff=(0.01, 0.05))
    try:
        got = 0
        t0 = time.monotonic()
        while got < 15:
            item = src.read()
            assert item is not None
            got += 1
            assert time.monotonic() - t0 < 20
        stats = src.stats()
    finally:
        src.close()
        unfreeze.set()
    assert stats.read_failures == 3
    assert stats.stalls == 1
    assert stats.reconnects == 2  # after the empty reads, and after the freeze (the dead capture is not one)
    assert cam.opened[:4] == [first, second, dead, third]
    assert first.released and dead.released
    deadline = time.monotonic() + 5
    while not second.released and time.monotonic() < deadline:  # the abandoned reader releases it when unblocked
        time.sleep(0.01)
    assert second.released


@pytest.mark.timeout(30)
def test_close_returns_promptly_even_while_a_read_is_frozen():
    unfreeze = threading.Event()
    # A 60 s backoff: a close that waited for the reconnect (or for the frozen read) would take a minute; one that does
    # not takes the 0.4 s sleep. The 20 s bound sits far from both, so machine load cannot decide it.
    src = open_source(0, capture_factory=lambda: FakeCapture(["frame", "freeze"], unfreeze=unfreeze), stall_timeout=0.2, backoff=(60.0, 60.0))
    try:
        assert src.read() is not None
        t0 = time.monotonic()
        time.sleep(0.4)  # now frozen for longer than the stall timeout
        src.close()
        assert time.monotonic() - t0 < 20
        assert src.read() is None
    finally:
        unfreeze.set()
