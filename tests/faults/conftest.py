"""Shared pieces of the hostile-input suite: ONE tiny model per session, generated images, two ways to run a verb.

`cli` runs a verb in-process (fast: no interpreter start) and returns (status, stdout, stderr); `subcli` runs
the real `waste-edge` in a subprocess, for what only a process can show (pipes, signals, /dev/full, exit at
interpreter shutdown). Every hostile input is generated here or in the test: nothing hostile is shipped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.runtime.tiny_model import make_fused_model
from waste_edge.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults-model")


@pytest.fixture(scope="session")
def model(model_dir) -> Path:
    return make_fused_model(model_dir / "tiny.onnx", channel_order="BGR")


def write_images(folder: Path, n: int = 5, size: int = 24) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"img{i}.png"
        Image.fromarray(np.full((size, size, 3), (i * 40) % 256, np.uint8)).save(p)
        out.append(p)
    return out


def write_video(path: Path, frames: int = 6) -> Path:
    """A tiny mp4v video (32x32, grey levels rising)."""
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 32))
    for i in range(frames):
        w.write(np.full((32, 32, 3), i * 30, np.uint8))
    w.release()
    return path


@pytest.fixture
def images(tmp_path) -> Path:
    write_images(tmp_path / "imgs")
    return tmp_path / "imgs"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WASTE_EDGE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def cli(capsys):
    def run(*argv: object) -> tuple[int, str, str]:
        status = main([os.fspath(a) if isinstance(a, Path) else str(a) for a in argv])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def subcli(*argv: object, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("WASTE_EDGE_DEBUG", None)
    cmd = [sys.executable, "-m", "waste_edge.cli", *[os.fspath(a) if isinstance(a, Path) else str(a) for a in argv]]
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(cmd, timeout=timeout, env=env, **kwargs)


def assert_one_line_error(err: str | bytes, *needles: str) -> None:
    """stderr ends in exactly one `error: ...` line, no traceback, and it names what went wrong."""
    text = err.decode("utf-8", "replace") if isinstance(err, bytes) else err
    assert "Traceback" not in text, text
    errors = [ln for ln in text.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, text
    for needle in needles:
        assert needle.lower() in errors[0].lower(), text


def assert_clean(err: str | bytes) -> None:
    text = err.decode("utf-8", "replace") if isinstance(err, bytes) else err
    assert "Traceback" not in text and "Exception ignored" not in text, text


def digest_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (inputs must come out byte-for-byte unchanged)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def csv_rows(path_or_text: Path | str) -> list[dict[str, str]]:
    import csv
    import io

    text = path_or_text.read_text(encoding="utf-8", errors="surrogateescape") if isinstance(path_or_text, Path) else path_or_text
    assert text == "" or text.endswith("\n"), "a partial last row"
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="session")
def clf_tiny(model):
    from waste_edge.runtime.classifier import Classifier

    with Classifier(model, threads=1) as c:
        yield c


@pytest.fixture
def tmpfs(tmp_path):
    """`mount(size)`: a fresh tmpfs of that size (e.g. "64k", "8m") under tmp_path, unmounted at teardown; the
    test is skipped cleanly where one cannot be mounted (not root, no mount)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
        mnt.mkdir()
        if os.geteuid() != 0 or not shutil.which("mount"):
            pytest.skip("mounting a tmpfs needs root")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(folder: Path, leave: int = 0) -> Path:
    """A filler file that takes all but about `leave` bytes of the file system under `folder`."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    filler = folder / "filler.bin"
    try:
        with open(filler, "wb", buffering=0) as fh:
            fh.write(b"\0" * max(0, free - leave))
    except OSError:  # the last block did not fit: the disk is full, as asked
        pass
    return filler
