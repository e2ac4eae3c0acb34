"""Real SIGINT / SIGTERM to a real `waste-edge` process: the run ends like Ctrl-C, with everything finalised.

camera: exit 0 (a stop is its normal end), a playable video, complete JSONL, the summary. predict: exit 130
after SIGINT and 143 after SIGTERM, every written row whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.faults.conftest import REPO, assert_clean, csv_rows, write_images


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sig") / "long.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (32, 32))
    frame = np.zeros((32, 32, 3), np.uint8)
    for i in range(20000):
        frame[:] = i % 256
        w.write(frame)
    w.release()
    return path


def _start(*argv) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "waste_edge.cli", *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"ended before the signal: {proc.stderr.read().decode()}")
        time.sleep(0.05)
    pytest.fail("no output in time")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_camera_stops_cleanly(sig, long_video, model, tmp_path):
    events, video = tmp_path / "e.jsonl", tmp_path / "v.mp4"
    proc = _start("camera", "--device", long_video, "--model", model, "--no-show", "--save", video, "--jsonl", events)
    _wait_for_lines(events, 20, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert_clean(err)
    assert b"frames" in out  # the summary
    lines = events.read_text().splitlines()
    assert lines and all(json.loads(ln) for ln in lines)
    cap = cv2.VideoCapture(str(video))
    assert cap.isOpened() and cap.read()[0]
    cap.release()


@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_predict_stops_with_whole_rows(sig, status, model, tmp_path):
    write_images(tmp_path / "many", n=3000, size=8)
    out = tmp_path / "o.csv"
    proc = _start("predict", tmp_path / "many", "--model", model, "--out", out, "--quiet", "--batch-size", "4")
    _wait_for_lines(out, 10, proc)
    proc.send_signal(sig)
    _o, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert_clean(err)
    assert err.decode().strip().splitlines()[-1] in ("interrupted", "terminated")
    rows = csv_rows(out)
    assert rows and all(r["label"] in ("B", "N") and float(r["confidence"]) > 0 for r in rows)
