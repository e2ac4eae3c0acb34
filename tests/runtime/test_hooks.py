"""`--on-decision`: real child processes (tests/runtime/hook_script.py) get the decision in their environment
and on stdin; the caller never waits; one run per camera with the newest decision waiting; failures and
timeouts are counted and logged once per kind; a timeout kills the whole process group; close() flushes
and counts what it could not finish. Every test checks that the outcome counts add up to `offered`."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import pytest

from tests.serve.conftest import wait_for
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.decision_event import DECISION_KEYS, DecisionEvent
from waste_edge.runtime.hooks import DecisionHook, HookStatus, parse_command

SCRIPT = Path(__file__).with_name("hook_script.py")
OUTCOMES = ("succeeded", "failed", "timed_out", "start_errors", "superseded", "abandoned", "running", "pending")


def event(label: str = "B", camera: str = "cam0", previous: str | None = None, frame: int = 1) -> DecisionEvent:
    return DecisionEvent(camera, label, {"B": "biodegradable", "N": "non-biodegradable"}.get(label, label), 0.91,
                         {"B": 0.91, "N": 0.09}, previous, frame, "ab" * 32, time.time())


def hook(mode: str, record: Path, *extra: str, timeout: float = 10.0) -> DecisionHook:
    return DecisionHook([sys.executable, str(SCRIPT), mode, str(record), *extra], timeout=timeout)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_accounted(s: HookStatus) -> None:
    assert sum(getattr(s, k) for k in OUTCOMES) == s.offered, s


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_the_command_gets_the_decision_in_its_environment_and_on_stdin(tmp_path, monkeypatch):
    monkeypatch.setenv("WASTE_EDGE_WEBHOOK_SECRET", "must-not-leak")
    rec = tmp_path / "rec.jsonl"
    h = hook("record", rec)
    ev = event("N", previous="B", frame=42)
    h.on_decision(ev)
    h.close(30)
    (r,) = records(rec)
    env = r["env"]
    assert env["WASTE_EDGE_CAMERA"] == "cam0" and env["WASTE_EDGE_LABEL"] == "N" and env["WASTE_EDGE_PREVIOUS"] == "B"
    assert env["WASTE_EDGE_DISPLAY_NAME"] == "non-biodegradable" and env["WASTE_EDGE_MODEL"] == "ab" * 32
    assert float(env["WASTE_EDGE_CONFIDENCE"]) == pytest.approx(0.91) and float(env["WASTE_EDGE_TS"]) == pytest.approx(ev.ts, abs=1e-3)
    assert env["WASTE_EDGE_FRAME"] == "42" and env["WASTE_EDGE_SEQ"] == "1"
    assert "WASTE_EDGE_WEBHOOK_SECRET" not in env, "a secret of the service reached the hook"
    doc = json.loads(r["stdin"])
    assert tuple(doc) == DECISION_KEYS and doc["schema"] == "waste-edge.decision/1"
    assert doc["label"] == "N" and doc["previous"] == "B" and doc["probabilities"] == {"B": 0.91, "N": 0.09} and doc["seq"] == 1
    s = h.status()
    assert (s.offered, s.succeeded) == (1, 1)
    assert_accounted(s)


def test_the_caller_never_waits_one_run_per_camera_newest_wins(tmp_path):
    rec = tmp_path / "rec.jsonl"
    h = hook("slow", rec, "1.5")
    h.on_decision(event("B", frame=1))
    wait_for(lambda: h.status().running == 1, 30, "the first run to start")
    t0 = time.monotonic()
    for i, label in enumerate(("N", "uncertain", "N"), start=2):  # arrive while cam0's command still runs
        h.on_decision(event(label, frame=i))
    h.on_decision(event("B", camera="cam1", frame=10))  # another camera does not wait for cam0
    returned_after = time.monotonic() - t0
    s = h.status()
    assert s.pending >= 1 and s.superseded == 2, s  # frames 2 and 3 replaced by frame 4
    assert returned_after < 1.0, f"on_decision blocked for {returned_after:.2f} s while a command ran"  # loose: the command takes 1.5 s
    h.close(60)
    got = sorted((r["env"]["WASTE_EDGE_CAMERA"], int(r["env"]["WASTE_EDGE_FRAME"])) for r in records(rec))
    assert got == [("cam0", 1), ("cam0", 4), ("cam1", 10)]
    seqs = sorted(int(r["env"]["WASTE_EDGE_SEQ"]) for r in records(rec) if r["env"]["WASTE_EDGE_CAMERA"] == "cam0")
    assert seqs == [1, 4], "the seq gap shows the hook what was skipped"
    s = h.status()
    assert (s.offered, s.succeeded, s.superseded, s.running, s.pending) == (5, 3, 2, 0, 0)
    assert_accounted(s)


def test_exit_1_is_counted_and_logged_once_with_its_output(tmp_path, caplog):
    rec = tmp_path / "rec.jsonl"
    h = hook("fail", rec)
    with caplog.at_level(logging.WARNING, logger="waste_edge.runtime.hooks"):
        for i in range(3):
            h.on_decision(event("B" if i % 2 == 0 else "N", frame=i))
            wait_for(lambda: h.status().failed == i + 1, 30, f"run {i + 1} to fail")
        h.close(10)
    s = h.status()
    assert (s.offered, s.failed, s.succeeded) == (3, 3, 0) and "exit status 1" in s.last_error
    assert len(records(rec)) == 3, "every run happened"
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1 and "exit status 1" in logged[0] and "flap jammed" in logged[0], logged
    assert_accounted(s)


def test_a_hanging_command_is_killed_with_its_children_at_the_timeout(tmp_path, caplog):
    rec = tmp_path / "rec.jsonl"
    h = hook("hang", rec, timeout=1.0)
    with caplog.at_level(logging.WARNING, logger="waste_edge.runtime.hooks"):
        h.on_decision(event("B", frame=1))
        wait_for(lambda: Path(str(rec) + ".pids").exists(), 30, "the hanging script to start its child")
        wait_for(lambda: h.status().timed_out == 1, 30, "the timeout")
        h.on_decision(event("N", frame=2))
        wait_for(lambda: h.status().timed_out == 2, 30, "the second timeout")
        h.close(10)
    pids = [int(p) for line in Path(str(rec) + ".pids").read_text().splitlines() for p in line.split()]
    assert len(pids) == 4
    wait_for(lambda: not any(alive(p) for p in pids), 10, "the script and its grandchild to be gone")
    s = h.status()
    assert (s.offered, s.timed_out, s.failed) == (2, 2, 0) and "killed" in s.last_error
    assert len([r for r in caplog.records if "still running after" in r.getMessage()]) == 1, "logged once per kind"
    assert_accounted(s)


def test_close_kills_and_counts_what_it_cannot_finish(tmp_path):
    rec = tmp_path / "rec.jsonl"
    h = hook("hang", rec, timeout=300.0)
    h.on_decision(event("B", frame=1))
    wait_for(lambda: Path(str(rec) + ".pids").exists(), 30, "the hanging script to start")
    h.on_decision(event("N", frame=2))  # waits behind the hanging one
    t0 = time.monotonic()
    h.close(0.5)
    assert time.monotonic() - t0 < 10, "close() must not wait for the command's own 300 s timeout"
    s = h.status()
    assert (s.offered, s.abandoned, s.running, s.pending) == (2, 2, 0, 0), s
    pids = [int(p) for p in Path(str(rec) + ".pids").read_text().split()]
    wait_for(lambda: not any(alive(p) for p in pids), 10, "the killed group to be gone")
    h.on_decision(event("B", frame=3))  # after close: counted, never run
    assert h.status().abandoned == 3
    assert_accounted(h.status())


def test_bad_commands_are_one_line_errors_and_a_vanished_program_is_counted(tmp_path):
    with pytest.raises(WasteEdgeError, match="not on PATH"):
        parse_command("no-such-program-waste-edge --flag")
    with pytest.raises(WasteEdgeError, match="empty"):
        parse_command("   ")
    with pytest.raises(WasteEdgeError, match="quotation"):
        parse_command("python3 'unclosed")
    script = tmp_path / "flap.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    with pytest.raises(WasteEdgeError, match="not an executable file"):
        parse_command(str(script))
    script.chmod(0o755)
    argv = parse_command(f"{script} --pin 17")
    assert argv == [str(script), "--pin", "17"]
    assert parse_command("sh -c 'echo $WASTE_EDGE_LABEL >> /tmp/x'") == ["sh", "-c", "echo $WASTE_EDGE_LABEL >> /tmp/x"]
    script.unlink()  # gone after start-up
    h = DecisionHook(argv, timeout=5)
    h.on_decision(event())
    h.close(10)
    s = h.status()
    assert (s.offered, s.start_errors) == (1, 1) and "cannot start" in s.last_error
    assert_accounted(s)
