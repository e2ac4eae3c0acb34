"""Sinks on a full disk: they count what they lose, say it once per kind, recover when space returns, and the
frame loop never dies of it; at exit the summary says what was lost, and a video that could not be finished is
reported, not left silently unplayable. Full disks are small tmpfs mounts (skipped without root) and /dev/full."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from tests.faults.conftest import REPO, assert_clean, assert_one_line_error, fill
from waste_edge.runtime import sinks
from waste_edge.runtime.sinks import JsonlSink, VideoSink

pytestmark = pytest.mark.timeout(180)


def _noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (240, 320, 3), dtype=np.uint8)


def _frames_in(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_jsonl_on_dev_full_counts_and_says_it_once(caplog, monkeypatch):
    monkeypatch.setattr(sinks, "RETRY_S", 0.0)
    sink = JsonlSink("/dev/full")
    with caplog.at_level(logging.WARNING, logger="waste_edge.runtime.sinks"):
        assert not any(sink.write({"frame": i}) for i in range(50))
    sink.close()
    assert sink.health.lost == 50 and sink.health.failing
    assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 1
    assert "50 events lost (No space left on device x50)" in sink.health.summary()


def test_jsonl_recovers_when_space_returns(tmpfs, monkeypatch):
    monkeypatch.setattr(sinks, "RETRY_S", 0.0)
    disk = tmpfs("256k")
    sink = JsonlSink(disk / "e.jsonl")
    filler = fill(disk, leave=8192)
    results = [sink.write({"frame": i, "pad": "x" * 200}) for i in range(200)]
    assert sink.health.failing and sink.health.lost > 0
    filler.unlink()  # the space returns
    assert all(sink.write({"frame": 200 + i}) for i in range(20))
    sink.close()
    assert not sink.health.failing and sink.health.recoveries == 1
    lines = (disk / "e.jsonl").read_text().splitlines()
    frames = [json.loads(ln)["frame"] for ln in lines]  # whole lines only
    assert frames == [i for i, ok in enumerate(results) if ok] + list(range(200, 220))


def test_video_pauses_before_the_disk_is_full_and_resumes(tmpfs, monkeypatch):
    monkeypatch.setattr(sinks, "SPACE_CHECK_S", 0.0)
    disk = tmpfs("24m")
    filler = fill(disk, leave=4 * 2**20 + 600_000)  # room for a few dozen 25 KB frames above the 4 MiB reserve
    video = VideoSink(disk / "v.mp4", fps=10)
    written = sum(video.write(_noise(i)) for i in range(80))
    assert 0 < written < 80 and video.health.failing and video.health.lost == 80 - written
    filler.unlink()
    assert all(video.write(_noise(100 + i)) for i in range(10))
    video.close()
    assert video.health.recoveries == 1 and not video.health.problem
    assert _frames_in(disk / "v.mp4") == written + 10  # playable, every frame it said it wrote


def test_unfinished_video_is_reported(tmpfs):
    """With no reserve the muxer does hit the full disk: the file does not play, and the sink says so."""
    disk = tmpfs("2m")
    fill(disk, leave=200_000)
    video = VideoSink(disk / "v.mp4", fps=10, reserve_bytes=0)
    for i in range(60):
        video.write(_noise(i))
    video.close()
    assert "could not be finished" in video.health.problem
    assert "could not be finished" in video.health.summary()


def _clip(path, frames: int = 40):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for i in range(frames):
        w.write(_noise(i))
    w.release()
    return path


def test_camera_save_on_a_full_disk_says_what_was_lost(tmpfs, tmp_path, model):
    """Exit 0 with an unplayable file and nothing said, before: now the loop runs on, the summary says what was lost
    and the status is 1."""
    disk = tmpfs("6m")
    fill(disk, leave=3 * 2**20)  # below the video sink's 4 MiB reserve from the start
    clip = _clip(tmp_path / "clip.avi")
    r = subprocess.run([sys.executable, "-m", "waste_edge.cli", "camera", "--device", str(clip), "--model", str(model), "--no-show",
                        "--save", str(disk / "out.mp4"), "--jsonl", str(tmp_path / "e.jsonl")],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 1, r.stderr
    assert_one_line_error(r.stderr, "could not be written")
    assert "40 frames in" in r.stdout and "lost: video" in r.stdout and "40 frames lost (disk nearly full" in r.stdout
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 40  # the other output is whole


def _serve(args, tmp_path):
    from tests.serve.conftest import ServeProcess

    pytest.importorskip("uvicorn")
    return ServeProcess(args, tmp_path)


def _get(url: str) -> tuple[int, dict]:
    import httpx

    r = httpx.get(url, timeout=10)
    return r.status_code, r.json()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_serve_jsonl_on_dev_full_runs_on_and_reports(tmp_path, model):
    clip = _clip(tmp_path / "clip.avi", frames=10)
    srv = _serve(["--device", str(clip), "--loop", "--model", str(model), "--jsonl", "/dev/full"], tmp_path)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            code, status = _get(srv.url + "/api/v1/status")
            if status["cameras"][0]["counters"]["frames"] > 20:
                break
            time.sleep(0.3)
        assert _get(srv.url + "/healthz")[0] == 200
        (jsonl,) = status["sinks"]
        assert jsonl["failing"] and jsonl["lost"] > 0
    finally:
        assert srv.terminate() == 0
    assert_clean(srv.output)
    assert "lost: events /dev/full:" in srv.output and "No space left on device" in srv.output


def test_serve_transient_full_disk_recovers(tmpfs, tmp_path, model):
    """The camera stayed failed for good (healthz 503) after a transient full disk; now the sink counts, recovers,
    and the camera is healthy throughout."""
    disk = tmpfs("1m")
    clip = _clip(tmp_path / "clip.avi", frames=10)
    srv = _serve(["--device", str(clip), "--loop", "--realtime", "--model", str(model), "--jsonl", str(disk / "e.jsonl")], tmp_path)
    try:
        def sink() -> dict:
            return _get(srv.url + "/api/v1/status")[1]["sinks"][0]

        filler = fill(disk)
        deadline = time.monotonic() + 60
        while not sink()["failing"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sink()["failing"] and _get(srv.url + "/healthz")[0] == 200
        filler.unlink()
        deadline = time.monotonic() + 60
        while sink()["failing"] and time.monotonic() < deadline:
            time.sleep(0.2)
        s = sink()
        assert not s["failing"] and s["recoveries"] >= 1 and s["lost"] > 0
        assert _get(srv.url + "/healthz")[0] == 200
        state = _get(srv.url + "/api/v1/status")[1]["cameras"][0]["state"]
        assert state in ("connected", "starting"), state
    finally:
        assert srv.terminate() == 0
    assert_clean(srv.output)
    text = (disk / "e.jsonl").read_text()
    assert text.endswith("\n") and all(json.loads(ln) for ln in text.splitlines())
    assert "lost: events" in srv.output
