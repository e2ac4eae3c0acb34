"""How a verb ends: closed pipes, full devices, unexpected exceptions (the last-resort handler)."""

from __future__ import annotations

import subprocess

import pytest

from tests.faults.conftest import assert_clean, assert_one_line_error, subcli
from waste_edge import _failsafe


def _pipe_head(cmd: list, lines: int = 3) -> tuple[int, bytes, bytes]:
    proc = subprocess.Popen(cmd[0], stdout=subprocess.PIPE, stderr=subprocess.PIPE, **cmd[1])
    head = [proc.stdout.readline() for _ in range(lines)]
    proc.stdout.close()  # what `head -3` does after its third line
    err = proc.stderr.read()
    return proc.wait(timeout=60), b"".join(head), err


def _argv(*argv):
    import os
    import sys

    from tests.faults.conftest import REPO

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return [sys.executable, "-m", "waste_edge.cli", *map(str, argv)], {"env": env}


def test_predict_into_closed_pipe_exits_quietly(model, tmp_path):
    from tests.faults.conftest import write_images

    write_images(tmp_path / "many", n=200, size=8)
    status, head, err = _pipe_head(_argv("predict", tmp_path / "many", "--model", model, "--quiet", "--batch-size", "1"))
    assert status == _failsafe.EXIT_SIGPIPE
    assert head.startswith(b"path,frame,label")
    assert_clean(err)
    assert b"error" not in err


def test_camera_jsonl_stdout_into_closed_pipe(model, tmp_path):
    from tests.faults.conftest import write_images

    write_images(tmp_path / "frames", n=120, size=8)
    status, head, err = _pipe_head(_argv("camera", "--device", tmp_path / "frames", "--model", model, "--no-show", "--jsonl", "-"))
    assert status in (0, _failsafe.EXIT_SIGPIPE)
    assert head.count(b"\n") == 3
    assert_clean(err)


@pytest.mark.parametrize("verb", [["predict", "IMGS", "--quiet"], ["info"], ["info", "--json"]])
def test_stdout_on_dev_full(verb, model, images):
    argv = [images if a == "IMGS" else a for a in verb] + ["--model", model]
    with open("/dev/full", "wb") as full:
        r = subcli(*argv, stdout=full)
    assert r.returncode == 1
    assert_one_line_error(r.stderr, "no space left")


def test_unexpected_exception_is_one_line(monkeypatch, capsys):
    def boom():
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.delenv(_failsafe.DEBUG_ENV, raising=False)
    assert _failsafe.run_verb(boom) == 1
    err = capsys.readouterr().err
    assert_one_line_error(err, "internal error", "ZeroDivisionError", _failsafe.DEBUG_ENV)
    assert "second line" not in err


def test_debug_env_shows_the_traceback(monkeypatch, capsys):
    monkeypatch.setenv(_failsafe.DEBUG_ENV, "1")
    assert _failsafe.run_verb(lambda: [][1]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_recursion_error_is_one_line(capsys):
    def deep(n=0):
        return deep(n + 1)

    assert _failsafe.run_verb(deep) == 1
    assert_one_line_error(capsys.readouterr().err, "nested too deeply")
