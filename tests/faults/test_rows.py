"""Rows that stay whole and honest: a full disk leaves only whole rows, odd file names round-trip,
spreadsheet formulas in text cells are neutralised."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.faults.conftest import assert_one_line_error, csv_rows, digest_tree, write_images


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (root only); skipped cleanly where it cannot be mounted."""
    mnt = tmp_path / f"full-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_disk_full_leaves_only_whole_rows(suffix, tiny_disk, tmp_path, cli, model):
    folder = tmp_path / ("long-name-" * 8)
    write_images(folder, n=800, size=4)
    before = digest_tree(folder)
    out = tiny_disk / f"o{suffix}"
    status, _out, err = cli("predict", folder, "--model", model, "--out", out, "--quiet")
    assert status == 1
    assert_one_line_error(err, "no space left", "whole rows")
    text = out.read_text()
    assert text.endswith("\n")
    if suffix == ".csv":
        rows = csv_rows(out)
        assert 0 < len(rows) < 800 and all(r["p_N"] and r["confidence"] for r in rows)
    else:
        assert all(json.loads(ln)["label"] for ln in text.splitlines())
    assert digest_tree(folder) == before


def test_non_utf8_names_round_trip(tmp_path, cli, model):
    folder = tmp_path / "odd"
    write_images(folder, n=1)
    names = [b"bad\xffname.png", "caf\u00e9 \u2603.png".encode(), b"new\nline.png", b"comma,quote\".png"]
    for raw in names:
        shutil.copy(folder / "img0.png", os.path.join(os.fsencode(folder), raw))
    for suffix in (".csv", ".jsonl"):
        out = tmp_path / f"o{suffix}"
        status, _o, err = cli("predict", folder, "--model", model, "--out", out, "--quiet")
        assert status == 0, err
        if suffix == ".csv":
            got = {os.fsencode(r["path"]) for r in csv_rows(out)}
        else:
            got = {os.fsencode(json.loads(ln)["path"]) for ln in out.read_text(encoding="utf-8").splitlines()}
        assert {os.path.basename(g) for g in got} == set(names) | {b"img0.png"}


@pytest.mark.parametrize("name", ["=cmd|calc.png", "+1.png", "-2.png", "@SUM(A1).png", "\tTab.png"])
def test_formula_cells_are_neutralised(name, tmp_path, cli, model):
    folder = tmp_path / "f"
    write_images(folder, n=1)
    (folder / "img0.png").rename(folder / name)
    status, _o, err = cli("predict", folder / name, "--model", model, "--out", tmp_path / "o.csv", "--quiet")
    assert status == 0, err
    (row,) = csv_rows(tmp_path / "o.csv")
    assert row["path"] == "'" + str(folder / name) if str(folder / name).startswith(("=", "+", "-", "@", "\t")) else row["path"] == str(folder / name)


def test_formula_class_names_neutralised(tmp_path, cli):
    from tests.runtime.tiny_model import make_fused_model

    m = make_fused_model(tmp_path / "f.onnx", classes=("=cmd|calc", "@x"))
    folder = tmp_path / "i"
    write_images(folder, n=2)
    status, _o, err = cli("predict", folder, "--model", m, "--out", tmp_path / "o.csv", "--quiet")
    assert status == 0, err
    rows = csv_rows(tmp_path / "o.csv")
    assert {r["label"] for r in rows} <= {"'=cmd|calc", "'@x"}
    assert not any(line.startswith(("=", "@")) for line in (tmp_path / "o.csv").read_text().split(","))


def test_disk_full_jsonl_events_stay_whole_lines(tiny_disk):
    """camera / serve --jsonl: the same whole-record rule as predict (one event per line, never half a line); the
    events that do not fit are counted, not raised (the loop goes on: tests/faults/test_sinks.py)."""
    from waste_edge.runtime.sinks import JsonlSink

    sink = JsonlSink(tiny_disk / "events.jsonl")
    written = [i for i in range(2_000) if sink.write({"frame": i, "label": "B", "confidence": 0.5, "note": "x" * 100})]
    sink.close()
    text = (tiny_disk / "events.jsonl").read_text()
    assert text.endswith("\n")
    frames = [json.loads(line)["frame"] for line in text.splitlines()]
    assert frames == written == list(range(len(frames))) and 0 < len(frames) == sink.lines
    assert sink.health.lost == 2_000 - len(frames) and "No space left on device" in sink.health.summary()
