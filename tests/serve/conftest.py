"""Real `waste-edge serve` processes on loopback, a real mosquitto, real chromium: nothing mocked.

`ServeProcess` starts `python -m waste_edge.cli serve --port 0 ...`, reads the port from its
"serving on http://127.0.0.1:PORT" line, and stops it with SIGTERM. Videos are generated here.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

from tests.helpers import REPO

STARTUP_S = 120.0  # model load + first frame on a busy 2-core machine


def wait_for(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except Exception as e:  # e.g. connection refused while starting
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


class ServeProcess:
    def __init__(self, args: list[str], tmp: Path, env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self.err_lines: list[str] = []
        full_env = {**os.environ, "WASTE_EDGE_CACHE": str(tmp / "cache"), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "waste_edge.cli", "serve", "--port", "0", *args], cwd=REPO, env=full_env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.err_lines), daemon=True).start()
        line = wait_for(lambda: next((l for l in self.lines if l.startswith("serving on ")), None) or self._dead(), STARTUP_S, "serve to listen")
        self.url = line.split()[2]

    @staticmethod
    def _pump(stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))

    def _dead(self) -> None:
        if self.proc.poll() is not None:
            time.sleep(0.2)
            raise AssertionError(f"serve exited with {self.proc.returncode}:\n" + "\n".join(self.lines + self.err_lines))

    @property
    def output(self) -> str:
        return "\n".join(self.lines + self.err_lines)

    def terminate(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("serve did not exit within 60 s of SIGTERM:\n" + self.output) from None


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def alternating_video(path: Path, n: int = 60, every: int = 5, fps: float = 15.0, size=(64, 48)) -> Path:
    """Warm (B for the tiny model) and cool (N) frames taking turns every `every` frames."""
    w, h = size
    warm = np.zeros((h, w, 3), np.uint8); warm[:] = (40, 90, 210)  # BGR: red
    cool = np.zeros((h, w, 3), np.uint8); cool[:] = (210, 90, 40)  # BGR: blue
    return write_video(path, [warm if (i // every) % 2 == 0 else cool for i in range(n)], fps)


def read_sse(client, stats: int = 2) -> dict[str, list[dict]]:
    """Events of GET /api/v1/events by type, until a `decision` and `stats` of them have arrived."""
    import json

    events: dict[str, list[dict]] = {}
    with client.stream("GET", "/api/v1/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.setdefault(kind, []).append(json.loads(line[6:]))
            if "decision" in events and len(events.get("stats", [])) >= stats:
                break
    return events


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.access(p, os.X_OK)), None)


class Mosquitto:
    """A broker on 127.0.0.1:PORT with persistence, so a durable subscriber keeps its queue across a restart."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary = binary
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {folder}/\n"
            f"autosave_interval 1\nlog_dest file {folder}/mosquitto.log\n"
            # Started as root, mosquitto drops to user "mosquitto", which cannot write into pytest's 0700
            # tmp folders: persistence then fails SILENTLY and the durable subscriber's session is forgotten
            # across a restart (messages published before it re-subscribes are lost: a flaky outage test).
            + (f"user {pwd.getpwuid(os.getuid()).pw_name}\n" if os.getuid() == 0 else "")
        )
        self.db = folder / "mosquitto.db"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: self._listening(), 20, "mosquitto to listen")

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"mosquitto exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
            # A restart is only a fair outage if the broker kept its sessions (it saves them on exit).
            assert self.db.is_file(), f"mosquitto did not persist its sessions to {self.db}"
        self.proc = None


@pytest.fixture
def mosquitto(tmp_path):
    binary = mosquitto_binary()
    if binary is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run does)")
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the [serve] extra) is not installed")
    broker = Mosquitto(binary, tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def serve_extra():
    for mod in ("fastapi", "uvicorn", "prometheus_client", "multipart", "httpx"):
        pytest.importorskip(mod, reason=f"{mod} is not installed (pip install 'waste-edge[serve,test]')")
