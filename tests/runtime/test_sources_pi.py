"""Sources on a Raspberry Pi, tested without the hardware: the camera module (`--device picamera2`, through
Picamera2) and USB cameras by their stable /dev/v4l names.

A fake `picamera2` module (put into sys.modules, where the source's lazy import finds it) stands in for the
library: it records the calls the source makes (configure with an RGB888 main stream, start, capture_array with a
timeout, stop, close) and can fail the ways a camera does (no such camera, busy, a capture that times out).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import io
import json
import subprocess
import sys
import types

import numpy as np
import pytest

from tests.helpers import REPO
from tests.runtime.fakes import bgr_frame
from waste_edge.runtime.camera import CameraConfig, run_camera
from waste_edge.runtime.sinks import OutputOptions
from waste_edge.runtime.sources import PICAMERA2_SIZE, Picamera2Spec, SourceError, open_source, parse_spec

pytestmark = pytest.mark.timeout(60)


class FakePicamera2:
    """The part of Picamera2's API the source uses; frames are BGR pictures of `label` (RGB888 is [B, G, R])."""

    cameras = 1  # cameras "attached"
    instances: list["FakePicamera2"] = []
    script: list[str] = []  # per capture_array call, shared by all instances: "frame" | "timeout"
    label = "B"
    busy = False

    def __init__(self, camera_num: int = 0) -> None:
        if camera_num >= self.cameras:
            raise IndexError("list index out of range")  # what Picamera2 raises: global_camera_info()[camera_num]
        if self.busy:
            try:
                raise OSError("[Errno 16] Device or resource busy")
            except OSError as e:
                raise RuntimeError("Camera __init__ sequence did not complete.") from e
        self.camera_num = camera_num
        self.calls: list[tuple] = []
        self.config: dict | None = None
        self.captures = 0
        FakePicamera2.instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict]:
        return [{"Model": "imx708", "Num": i} for i in range(FakePicamera2.cameras)]

    def create_video_configuration(self, main: dict | None = None, **kw) -> dict:
        self.calls.append(("create_video_configuration", main))
        return {"main": dict(main or {}), "controls": {"FrameDurationLimits": (33333, 33333)}}

    def configure(self, config: dict) -> None:
        self.calls.append(("configure",))
        self.config = config

    @property
    def camera_config(self) -> dict | None:
        return self.config

    def start(self) -> None:
        self.calls.append(("start",))

    def capture_array(self, name: str = "main", wait=None) -> np.ndarray:
        self.calls.append(("capture_array", name, wait))
        step = FakePicamera2.script.pop(0) if FakePicamera2.script else "frame"
        if step == "timeout":
            raise TimeoutError("timed out")
        w, h = self.config["main"]["size"]
        self.captures += 1
        return bgr_frame(FakePicamera2.label, 0, size=(w, h))

    def stop(self) -> None:
        self.calls.append(("stop",))

    def close(self) -> None:
        self.calls.append(("close",))


@pytest.fixture
def fake_picamera2(monkeypatch):
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    FakePicamera2.instances = []
    FakePicamera2.script = []
    FakePicamera2.cameras, FakePicamera2.label, FakePicamera2.busy = 1, "B", False
    return FakePicamera2


def test_parse_spec_picamera2_forms(tmp_path):
    assert parse_spec("picamera2") == ("picamera2", Picamera2Spec(0, PICAMERA2_SIZE))
    assert parse_spec("PiCamera2:1") == ("picamera2", Picamera2Spec(1, (640, 480)))
    assert parse_spec("picamera2:0:1280x720") == ("picamera2", Picamera2Spec(0, (1280, 720)))
    for bad in ("picamera2:x", "picamera2:0:1280", "picamera2:0:641x480", "picamera2:0:16x16"):
        with pytest.raises(SourceError, match="picamera2"):
            parse_spec(bad)
    clip = tmp_path / "picamera2_clip.avi"
    clip.write_bytes(b"")
    assert parse_spec(str(clip))[0] == "video"  # a file whose name starts with the word is still a file


def test_v4l_by_id_names_are_cameras():
    """Raspberry Pi OS numbers its codec and ISP nodes /dev/video10.. too; by-id names keep a USB camera's identity."""
    name = "/dev/v4l/by-id/usb-046d_HD_Pro_Webcam_C920-video-index0"
    assert parse_spec(name) == ("camera", name)


def test_missing_picamera2_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # `import picamera2` raises ImportError
    with pytest.raises(SourceError) as err:
        open_source("picamera2")
    msg = str(err.value)
    assert "\n" not in msg and "apt install python3-picamera2" in msg and "--system-site-packages" in msg


def test_picamera2_built_for_numpy1_says_how_to_fix(monkeypatch):
    """Raspberry Pi OS's simplejpeg is built for numpy 1.x; Picamera2 imports it and fails next to numpy 2."""

    class Broken(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            return importlib.util.spec_from_loader(name, self) if name == "picamera2" else None

        def create_module(self, spec):
            return None

        def exec_module(self, module):
            raise ValueError("numpy.dtype size changed, may indicate binary incompatibility. Expected 96 from C header, got 88 from PyObject")

    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    with pytest.raises(SourceError, match=r"pip install --force-reinstall simplejpeg") as err:
        open_source("picamera2")
    assert "\n" not in str(err.value)


def test_sources_module_does_not_import_picamera2():
    code = "import sys, waste_edge.runtime.sources, waste_edge.runtime.camera; print('picamera2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_picamera2_frames_are_bgr_and_the_camera_is_closed(fake_picamera2):
    with open_source("picamera2:0:320x240") as src:
        assert (src.kind, src.live, src.channel_order, src.name) == ("picamera2", True, "BGR", "picamera2 0")
        assert src.fps == pytest.approx(30.0, rel=1e-3)
        frame, _ = src.read()
        assert np.array_equal(frame, bgr_frame("B", 0, size=(320, 240)))  # as captured: no flip, no copy into a wrong shape
    cam = fake_picamera2.instances[0]
    assert cam.calls[0] == ("create_video_configuration", {"size": (320, 240), "format": "RGB888"})
    assert [c[0] for c in cam.calls[1:3]] == ["configure", "start"]
    captures = [c for c in cam.calls if c[0] == "capture_array"]
    assert captures and all(c[1] == "main" and c[2] == pytest.approx(5.0) for c in captures)  # bounded wait
    assert [c[0] for c in cam.calls[-2:]] == ["stop", "close"]


def test_picamera2_frames_run_through_the_camera_loop(fake_picamera2, clf):
    """The same loop as every camera; the tiny model reads channels in the declared order, so B means BGR held."""
    for label in ("B", "N"):
        fake_picamera2.label = label
        with open_source("picamera2") as src:
            summary = run_camera(clf, src, CameraConfig(output=OutputOptions(show=False), max_frames=3))
        assert summary.frames == 3 and summary.labels == {label: 3}


def test_picamera2_timeouts_reopen_the_camera(fake_picamera2):
    fake_picamera2.script = ["frame", "timeout", "timeout", "timeout"]
    with open_source("picamera2", max_failed_reads=3, backoff=(0.01, 0.05)) as src:
        for _ in range(3):
            assert src.read() is not None
        stats = src.stats()
    assert stats.read_failures == 3 and stats.reconnects == 1
    first, second = fake_picamera2.instances[:2]
    assert ("close",) in first.calls and ("start",) in second.calls  # the stuck camera was released before reuse


def test_picamera2_missing_or_busy_camera_is_a_clear_error(fake_picamera2):
    with pytest.raises(SourceError, match=r"no Raspberry Pi camera number 1 \(found 1\).*rpicam-hello --list-cameras"):
        open_source("picamera2:1")
    fake_picamera2.busy = True
    with pytest.raises(SourceError, match="cannot open picamera2 0: Camera __init__ sequence did not complete.: .*busy"):
        open_source("picamera2")


def test_camera_cli_reads_picamera2(fake_picamera2, model):
    from waste_edge.cli import main

    fake_picamera2.label = "N"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["camera", "--device", "picamera2", "--model", str(model), "--no-show", "--max-frames", "2", "--jsonl", "-"])
    events = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert rc == 0 and [e["label"] for e in events] == ["N", "N"]
    assert [c[0] for c in fake_picamera2.instances[0].calls[-2:]] == ["stop", "close"]


def test_serve_accepts_picamera2_devices():
    from waste_edge.serve.service import camera_specs

    assert camera_specs(["picamera2", "back=picamera2:1:1280x720"]) == [("cam0", "picamera2"), ("back", "picamera2:1:1280x720")]
